//! Reading one source file for the module graph: its tokens (comments, strings and character
//! literals dropped), its `mod` declarations, `path` attributes, inline modules, and the
//! paths it names that start with `crate`, `super` or `self`, or that a `use` imports.

/// A token: an identifier or keyword, `::`, or any other character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Ident(String),
    PathSep,
    Punct(char),
}

/// A token and the line it is on.
#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
}

/// Where a named path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// `crate::…` (also `$crate::…`).
    Crate,
    /// `super::…`, this many times.
    Super(usize),
    /// `self::…`.
    SelfModule,
    /// A `use` path starting with a name: a child module of the one it is in, or another
    /// crate.
    Name,
}

/// A path the file names, e.g. `use crate::pod::{runner_job}` gives `crate` + `pod::runner_job`.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The inline modules (`mod tests { … }`) it is in, outermost first.
    pub inline: Vec<String>,
    /// How the path starts.
    pub start: Start,
    /// The segments after the start (for [`Start::Name`], including the name).
    pub segments: Vec<String>,
    /// The name a `use` binds it to (the last segment or the `as` name); none for a glob or a
    /// path outside a `use`.
    pub binds: Option<String>,
    /// Whether it is a `use` (not a path in code).
    pub is_use: bool,
    /// The line it starts on (a `use`'s first line).
    pub line: usize,
}

/// A `mod name;` declaration: a module in its own file.
#[derive(Debug, Clone)]
pub struct ModDecl {
    /// The inline modules it is in, outermost first.
    pub inline: Vec<String>,
    /// The module's name.
    pub name: String,
    /// The line of `mod`.
    pub line: usize,
    /// The line of a `path` attribute on it, if it has one.
    pub path_attribute: Option<usize>,
}

/// What the module graph needs from one file.
#[derive(Debug, Clone, Default)]
pub struct FileScan {
    /// Every `mod name;`.
    pub mod_decls: Vec<ModDecl>,
    /// Every `mod name { … }`, as its inline path in the file.
    pub inline_modules: Vec<Vec<String>>,
    /// Every path into a module it names.
    pub references: Vec<Reference>,
}

/// Scans one file's text.
pub fn scan(text: &str) -> FileScan {
    let tokens = lex(text);
    let mut scan = FileScan::default();
    // Inline modules open, each with the brace depth outside it.
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut path_attribute = None;
    let mut i = 0;
    let inline_of = |open: &[(String, usize)]| open.iter().map(|(n, _)| n.clone()).collect();
    while i < tokens.len() {
        let line = tokens[i].line;
        match &tokens[i].kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => {
                depth = depth.saturating_sub(1);
                if open.last().is_some_and(|(_, d)| *d == depth) {
                    open.pop();
                }
            }
            Kind::Punct('#') if is_path_attribute(&tokens[i..]) => path_attribute = Some(line),
            Kind::Ident(word) if word == "mod" => {
                if let Some(Kind::Ident(name)) = tokens.get(i + 1).map(|t| &t.kind) {
                    match tokens.get(i + 2).map(|t| &t.kind) {
                        Some(Kind::Punct(';')) => scan.mod_decls.push(ModDecl {
                            inline: inline_of(&open),
                            name: name.clone(),
                            line,
                            path_attribute: path_attribute.take(),
                        }),
                        Some(Kind::Punct('{')) => {
                            open.push((name.clone(), depth));
                            scan.inline_modules.push(inline_of(&open));
                        }
                        _ => {}
                    }
                    i += 2;
                    continue;
                }
            }
            Kind::Ident(word) if word == "use" => {
                let mut leaves = Vec::new();
                i += 1;
                if tokens.get(i).map(|t| &t.kind) != Some(&Kind::PathSep) {
                    use_tree(&tokens, &mut i, &mut Vec::new(), &mut leaves);
                }
                for leaf in leaves {
                    if let Some(reference) = reference(inline_of(&open), leaf, true, line) {
                        scan.references.push(reference);
                    }
                }
                continue;
            }
            Kind::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1).map(|t| &t.kind) == Some(&Kind::PathSep) =>
            {
                let mut leaves = Vec::new();
                use_tree(&tokens, &mut i, &mut Vec::new(), &mut leaves);
                for leaf in leaves {
                    if let Some(reference) = reference(inline_of(&open), leaf, false, line) {
                        scan.references.push(reference);
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// A `path` attribute (outer or inner) at the start of `tokens`.
fn is_path_attribute(tokens: &[Token]) -> bool {
    let kinds: Vec<&Kind> = tokens.iter().take(4).map(|t| &t.kind).collect();
    let path = Kind::Ident("path".into());
    matches!(kinds.as_slice(), [_, Kind::Punct('['), p, ..] if **p == path)
        || matches!(kinds.as_slice(), [_, Kind::Punct('!'), Kind::Punct('['), p] if **p == path)
}

/// One leaf of a use tree: its segments and the name it binds (none for a glob).
struct Leaf {
    segments: Vec<String>,
    binds: Option<String>,
}

/// Reads a use tree (or a path in code) at `tokens[*i]`, with the segments of the groups
/// around it in `prefix`, and leaves `*i` after it.
fn use_tree(tokens: &[Token], i: &mut usize, prefix: &mut Vec<String>, leaves: &mut Vec<Leaf>) {
    let depth = prefix.len();
    loop {
        match tokens.get(*i).map(|t| &t.kind) {
            Some(Kind::Ident(name)) => {
                prefix.push(name.clone());
                *i += 1;
                if tokens.get(*i).map(|t| &t.kind) == Some(&Kind::PathSep) {
                    *i += 1;
                    continue;
                }
                let mut binds = name.clone();
                if let (Some(Kind::Ident(word)), Some(Kind::Ident(alias))) = (
                    tokens.get(*i).map(|t| &t.kind),
                    tokens.get(*i + 1).map(|t| &t.kind),
                ) && word == "as"
                {
                    binds.clone_from(alias);
                    *i += 2;
                }
                let mut segments = prefix.clone();
                // `{self, …}` names the group's module itself.
                if segments.last().is_some_and(|s| s == "self") && segments.len() > 1 {
                    segments.pop();
                    if binds == "self" {
                        binds = segments.last().cloned().unwrap_or_default();
                    }
                }
                leaves.push(Leaf {
                    segments,
                    binds: Some(binds),
                });
            }
            Some(Kind::Punct('*')) => {
                *i += 1;
                leaves.push(Leaf {
                    segments: prefix.clone(),
                    binds: None,
                });
            }
            Some(Kind::Punct('{')) => {
                *i += 1;
                loop {
                    match tokens.get(*i).map(|t| &t.kind) {
                        None => break,
                        Some(Kind::Punct('}')) => {
                            *i += 1;
                            break;
                        }
                        Some(Kind::Punct(',')) => *i += 1,
                        Some(_) => {
                            let before = *i;
                            use_tree(tokens, i, prefix, leaves);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        prefix.truncate(depth);
        return;
    }
}

/// A leaf as a reference, by how its path starts; none for `::name` or an empty path.
fn reference(inline: Vec<String>, leaf: Leaf, is_use: bool, line: usize) -> Option<Reference> {
    let mut segments = leaf.segments.into_iter().peekable();
    let start = match segments.peek()?.as_str() {
        "crate" => {
            segments.next();
            Start::Crate
        }
        "self" => {
            segments.next();
            Start::SelfModule
        }
        "super" => {
            let mut times = 0;
            while segments.next_if(|s| s == "super").is_some() {
                times += 1;
            }
            Start::Super(times)
        }
        _ => Start::Name,
    };
    Some(Reference {
        inline,
        start,
        segments: segments.collect(),
        binds: leaf.binds.filter(|_| is_use),
        is_use,
        line,
    })
}

/// The tokens of `text`, without comments, string, byte-string and character literals, and
/// lifetimes' quotes; raw identifiers lose their `r#`.
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        i: 0,
        line: 1,
    };
    let mut tokens = Vec::new();
    while let Some(&c) = chars.get(lexer.i) {
        let line = lexer.line;
        let next = chars.get(lexer.i + 1).copied();
        if c == '\n' {
            lexer.line += 1;
            lexer.i += 1;
        } else if c.is_whitespace() {
            lexer.i += 1;
        } else if c == '/' && next == Some('/') {
            while lexer.i < chars.len() && chars[lexer.i] != '\n' {
                lexer.i += 1;
            }
        } else if c == '/' && next == Some('*') {
            lexer.block_comment();
        } else if c == '"' {
            lexer.string();
        } else if c == '\'' {
            lexer.quote();
        } else if c.is_alphabetic() || c == '_' {
            if let Some(word) = lexer.word() {
                tokens.push(Token {
                    kind: Kind::Ident(word),
                    line,
                });
            }
        } else if c.is_ascii_digit() {
            while chars
                .get(lexer.i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                lexer.i += 1;
            }
        } else if c == ':' && next == Some(':') {
            lexer.i += 2;
            tokens.push(Token {
                kind: Kind::PathSep,
                line,
            });
        } else {
            lexer.i += 1;
            tokens.push(Token {
                kind: Kind::Punct(c),
                line,
            });
        }
    }
    tokens
}

struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    line: usize,
}

impl Lexer<'_> {
    fn at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.i + offset).copied()
    }

    /// Moves past `n` characters, counting lines.
    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            if self.at(0) == Some('\n') {
                self.line += 1;
            }
            if self.i < self.chars.len() {
                self.i += 1;
            }
        }
    }

    /// `/* … */`, nested.
    fn block_comment(&mut self) {
        let mut depth = 0;
        while let Some(c) = self.at(0) {
            if c == '/' && self.at(1) == Some('*') {
                depth += 1;
                self.skip(2);
            } else if c == '*' && self.at(1) == Some('/') {
                depth -= 1;
                self.skip(2);
                if depth == 0 {
                    return;
                }
            } else {
                self.skip(1);
            }
        }
    }

    /// A `"…"` literal with escapes, from its opening quote.
    fn string(&mut self) {
        self.skip(1);
        while let Some(c) = self.at(0) {
            match c {
                '\\' => self.skip(2),
                '"' => {
                    self.skip(1);
                    return;
                }
                _ => self.skip(1),
            }
        }
    }

    /// A raw string after its `r`: `#"…"#` with any number of `#`.
    fn raw_string(&mut self) {
        let mut hashes = 0;
        while self.at(0) == Some('#') {
            hashes += 1;
            self.skip(1);
        }
        self.skip(1);
        while self.at(0).is_some() {
            if self.at(0) == Some('"') && (1..=hashes).all(|k| self.at(k) == Some('#')) {
                self.skip(1 + hashes);
                return;
            }
            self.skip(1);
        }
    }

    /// A character literal, or a lifetime's quote (then the name is read as a word).
    fn quote(&mut self) {
        if self.at(1) == Some('\\') {
            self.skip(3);
            while self.at(0).is_some_and(|c| c != '\'') {
                self.skip(1);
            }
            self.skip(1);
        } else if self.at(2) == Some('\'') {
            self.skip(3);
        } else {
            self.skip(1);
        }
    }

    /// An identifier or keyword; none when the word was a literal's prefix (`r"…"`,
    /// `b'x'`, …) and the literal was skipped.
    fn word(&mut self) -> Option<String> {
        let start = self.i;
        while self.at(0).is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.i += 1;
        }
        let word: String = self.chars[start..self.i].iter().collect();
        let (next, after) = (self.at(0), self.at(1));
        match (word.as_str(), next) {
            ("r" | "br" | "cr", Some('#'))
                if after.is_some_and(|c| c.is_alphabetic() || c == '_') =>
            {
                self.skip(1);
                self.word()
            }
            ("r" | "br" | "cr", Some('"' | '#')) => {
                self.raw_string();
                None
            }
            ("b" | "c", Some('"')) => {
                self.string();
                None
            }
            ("b", Some('\'')) => {
                self.quote();
                None
            }
            _ => Some(word),
        }
    }
}
