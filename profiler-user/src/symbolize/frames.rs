use std::{collections::HashSet, ffi::OsStr, fmt::Write as _, path::Path, sync::Arc};

use blazesym::symbolize::{CodeInfo, Sym, Symbolized};

use crate::fast_hash::HashMap;

/// One function at one address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled function name.
    pub function: Arc<str>,
    /// Source file, when debug info says.
    pub file: Option<Arc<str>>,
    /// Source line, when debug info says.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame with a name only.
    pub fn named(function: &str) -> Self {
        Self {
            function: function.into(),
            file: None,
            line: None,
        }
    }
}

/// The frames at one address, innermost (inlined) first and the containing function last.
/// Empty when the address could not be named: the caller keeps the address and its mapping.
pub type Frames = Arc<[Frame]>;

/// Shares the text of names and file paths: many addresses fall in one function.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: HashSet<Arc<str>>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(shared.clone());
        shared
    }

    pub(crate) fn clear(&mut self) {
        self.strings.clear();
    }
}

/// Turns one blazesym answer into frames. blazesym is asked for mangled names: each distinct
/// name of the answer is demangled once here, where blazesym demangled every frame of every
/// address (a function's addresses and its inlined callees repeat the same names). The names
/// and paths seen are keyed by the answer's own text, so nothing outlives the batch.
pub(crate) struct Converter<'i, 'a> {
    interner: &'i mut Interner,
    names: HashMap<&'a str, Arc<str>>,
    paths: HashMap<(Option<&'a OsStr>, &'a OsStr), Arc<str>>,
    buffer: String,
}

impl<'i, 'a> Converter<'i, 'a> {
    pub(crate) fn new(interner: &'i mut Interner) -> Self {
        Self {
            interner,
            names: HashMap::default(),
            paths: HashMap::default(),
            buffer: String::new(),
        }
    }

    /// Converts blazesym's answer; `Unknown` becomes an empty list, never an error.
    pub(crate) fn frames(&mut self, symbolized: &'a Symbolized<'_>) -> Frames {
        match symbolized {
            Symbolized::Sym(sym) => self.sym_frames(sym),
            Symbolized::Unknown(_) => Arc::from([]),
        }
    }

    fn sym_frames(&mut self, sym: &'a Sym<'_>) -> Frames {
        // blazesym lists the containing function, then inlined calls outermost to innermost.
        let mut frames = Vec::with_capacity(1 + sym.inlined.len());
        frames.push(self.frame(&sym.name, sym.code_info.as_deref()));
        for inlined in &sym.inlined {
            frames.push(self.frame(&inlined.name, inlined.code_info.as_ref()));
        }
        frames.reverse();
        frames.into()
    }

    fn frame(&mut self, name: &'a str, code_info: Option<&'a CodeInfo<'_>>) -> Frame {
        Frame {
            function: self.name(name),
            file: code_info.map(|info| self.path(info)),
            line: code_info.and_then(|info| info.line),
        }
    }

    fn name(&mut self, mangled: &'a str) -> Arc<str> {
        if let Some(name) = self.names.get(mangled) {
            return name.clone();
        }
        let name = match demangle(mangled, &mut self.buffer) {
            Some(demangled) => self.interner.intern(demangled),
            None => self.interner.intern(mangled),
        };
        self.names.insert(mangled, name.clone());
        name
    }

    fn path(&mut self, info: &'a CodeInfo<'_>) -> Arc<str> {
        let key = (info.dir.as_deref().map(Path::as_os_str), &*info.file);
        if let Some(path) = self.paths.get(&key) {
            return path.clone();
        }
        let path = self.interner.intern(&info.to_path().to_string_lossy());
        self.paths.insert(key, path.clone());
        path
    }
}

/// A Rust or C++ symbol demangled into `buffer`, as blazesym demangles a name of unknown
/// language: Rust first (without its hash), then C++; `None` when neither takes it.
fn demangle<'b>(mangled: &str, buffer: &'b mut String) -> Option<&'b str> {
    buffer.clear();
    if let Ok(rust) = rustc_demangle::try_demangle(mangled) {
        return write!(buffer, "{rust:#}")
            .is_ok()
            .then_some(buffer.as_str());
    }
    let cpp = cpp_demangle::Symbol::new(mangled).ok()?.demangle().ok()?;
    *buffer = cpp;
    Some(buffer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_strings_are_shared() {
        let mut interner = Interner::default();
        let a = interner.intern("main");
        let b = interner.intern("main");
        assert!(Arc::ptr_eq(&a, &b));
        interner.clear();
        assert!(!Arc::ptr_eq(&a, &interner.intern("main")));
    }

    #[test]
    fn demangles_rust_without_its_hash_then_cpp() {
        let mut buffer = String::new();
        let mut demangled = |name| demangle(name, &mut buffer).map(str::to_owned);
        // Legacy Rust mangling, then v0.
        assert_eq!(
            demangled("_ZN4core3fmt5write17h0123456789abcdefE").as_deref(),
            Some("core::fmt::write")
        );
        assert_eq!(
            demangled("_RNvCs1234_7mycrate3foo").as_deref(),
            Some("mycrate::foo")
        );
        assert_eq!(
            demangled("_ZN5space3fooEibc").as_deref(),
            Some("space::foo(int, bool, char)")
        );
        assert_eq!(demangled("main"), None);
        assert_eq!(demangled("do_syscall_64"), None);
    }
}
