//! What the fuzz targets (`fuzz/`) drive: the web application's router over a directory, with
//! no listener, and the parsers its handlers use. Not an API.

use std::{io, path::Path};

pub use super::filters::parse_time;
pub use super::paths::{check_relative, decode as decode_path};

/// The router `profiler serve` answers with, over `dir`.
pub fn router(dir: &Path) -> io::Result<axum::Router> {
    let catalog = super::catalog::Catalog::new(dir)?;
    let app = super::routes::App::new(catalog, dir.display().to_string(), 1);
    Ok(super::routes::router(app, &[]))
}
