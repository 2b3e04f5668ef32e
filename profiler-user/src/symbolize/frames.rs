use std::{path::Path, sync::Arc};

use blazesym::symbolize::{CodeInfo, Sym, Symbolized};

/// One function at one address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled function name.
    pub function: String,
    /// Source file, when debug info says.
    pub file: Option<String>,
    /// Source line, when debug info says.
    pub line: Option<u32>,
}

/// The frames at one address, innermost (inlined) first and the containing function last.
/// Empty when the address could not be named: the caller keeps the address and its mapping.
pub type Frames = Arc<[Frame]>;

/// Converts blazesym's answer; `Unknown` becomes an empty list, never an error.
pub(crate) fn from_symbolized(symbolized: &Symbolized<'_>) -> Frames {
    match symbolized {
        Symbolized::Sym(sym) => from_sym(sym),
        Symbolized::Unknown(_) => Arc::from([]),
    }
}

fn from_sym(sym: &Sym<'_>) -> Frames {
    // blazesym lists the containing function, then inlined calls outermost to innermost.
    let outer = frame(&sym.name, sym.code_info.as_deref());
    let inlined = sym
        .inlined
        .iter()
        .map(|f| frame(&f.name, f.code_info.as_ref()));
    let mut frames: Vec<Frame> = std::iter::once(outer).chain(inlined).collect();
    frames.reverse();
    frames.into()
}

fn frame(name: &str, code_info: Option<&CodeInfo<'_>>) -> Frame {
    Frame {
        function: name.to_owned(),
        file: code_info.map(|info| display_path(&info.to_path())),
        line: code_info.and_then(|info| info.line),
    }
}

fn display_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
