use std::{collections::HashSet, sync::Arc};

use blazesym::symbolize::{CodeInfo, Sym, Symbolized};

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

    /// Converts blazesym's answer; `Unknown` becomes an empty list, never an error.
    pub(crate) fn frames(&mut self, symbolized: &Symbolized<'_>) -> Frames {
        match symbolized {
            Symbolized::Sym(sym) => self.sym_frames(sym),
            Symbolized::Unknown(_) => Arc::from([]),
        }
    }

    fn sym_frames(&mut self, sym: &Sym<'_>) -> Frames {
        // blazesym lists the containing function, then inlined calls outermost to innermost.
        let mut frames = Vec::with_capacity(1 + sym.inlined.len());
        frames.push(self.frame(&sym.name, sym.code_info.as_deref()));
        for inlined in &sym.inlined {
            frames.push(self.frame(&inlined.name, inlined.code_info.as_ref()));
        }
        frames.reverse();
        frames.into()
    }

    fn frame(&mut self, name: &str, code_info: Option<&CodeInfo<'_>>) -> Frame {
        Frame {
            function: self.intern(name),
            file: code_info.map(|info| self.intern(&info.to_path().to_string_lossy())),
            line: code_info.and_then(|info| info.line),
        }
    }
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
}
