//! The module rules `cargo xtask test` checks: no two modules of a crate import each other,
//! directly or through others; no `path` attribute hides where a module's file is; and no
//! source file but a module's tests is over [`MAX_FILE_LINES`] lines (a module with parts is
//! a folder of files named for them).
//!
//! The rule, precisely. A crate's modules are found from its roots (`src/lib.rs`,
//! `src/main.rs`, `src/bin/*.rs`) by their `mod` declarations, file modules and inline ones
//! alike (a `mod tests { … }` is a module of its file's module). A module *uses* another when
//! it names a path into it: a `use` or a path in code starting with `crate::` or `super::`
//! (`self::` and a `use` of a child's name only reach its own descendants). The module it
//! reaches is the longest prefix of the path that is a module; a name the crate root imports
//! or re-exports (`crate::Pool` for `pub use pool::Pool`) is followed to where it comes from,
//! and an unknown name under a root with exactly one glob re-export (`pub use resource::*`)
//! to that glob's module. A module using its ancestors, its descendants or itself is
//! ignored: a part using its parent's items, a parent using its parts. Any other use of B by
//! A is an edge between the two children of their closest common ancestor that hold them
//! (`a::x` using `b::y` is `a → b`; `a::x` using `a::z` is `a::x → a::z`), so the graph's
//! edges join siblings. A circle is a strongly connected component of more than one module:
//! siblings that import each other, directly or through other siblings. Tests count: a
//! circle only tests close is still one.
//!
//! [`check`] is pure (a crate's files in, its problems out); [`run`] reads the workspace.

mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context as _, bail};

use parse::{FileScan, Reference, Start};

/// A module's path from the crate root (empty: the root).
type ModulePath = Vec<String>;

/// One crate's sources: each file under `src/` by its `/`-separated path, with its text.
pub struct Sources {
    /// The crate's folder name, for messages.
    pub name: String,
    /// Each file's text by its path under `src/`.
    pub files: BTreeMap<String, String>,
}

/// A place that makes an edge: the file (under `src/`) and its line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The file's path under `src/`.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
}

/// What breaks the module rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Modules that import each other: the modules (sorted) and each edge between them with
    /// the first place in each file that makes it.
    Circle {
        /// The crate's folder name.
        krate: String,
        /// The modules on the circle, e.g. `cache` or `client::send`.
        modules: Vec<String>,
        /// Each edge between them (from, to) with where it is made.
        edges: Vec<(String, String, Vec<Place>)>,
    },
    /// A `path` attribute: the module's file is not where its path says.
    PathAttribute {
        /// The crate's folder name.
        krate: String,
        /// The attribute.
        at: Place,
    },
    /// A file other than a module's tests over [`MAX_FILE_LINES`] lines.
    TooLong {
        /// The crate's folder name.
        krate: String,
        /// The file's path under `src/`.
        file: String,
        /// Its lines.
        lines: usize,
    },
    /// A `mod name;` whose file (`name.rs` or `name/mod.rs`) is missing.
    MissingFile {
        /// The crate's folder name.
        krate: String,
        /// The declaration.
        at: Place,
        /// The module it declares.
        module: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Circle {
                krate,
                modules,
                edges,
            } => {
                write!(f, "{krate}: {} import each other:", modules.join(", "))?;
                for (from, to, places) in edges {
                    let places: Vec<String> = places
                        .iter()
                        .map(|p| format!("src/{}:{}", p.file, p.line))
                        .collect();
                    write!(f, "\n    {from} → {to} ({})", places.join(", "))?;
                }
                Ok(())
            }
            Problem::PathAttribute { krate, at } => write!(
                f,
                "{krate}: src/{}:{}: a path attribute; make the module a folder",
                at.file, at.line
            ),
            Problem::TooLong { krate, file, lines } => write!(
                f,
                "{krate}: src/{file} has {lines} lines, over {MAX_FILE_LINES}: split it into parts named for what they do"
            ),
            Problem::MissingFile { krate, at, module } => write!(
                f,
                "{krate}: src/{}:{}: no file for module {module}",
                at.file, at.line
            ),
        }
    }
}

/// Checks every crate under `crates/` and `xtask/`; the number of crates checked, or an
/// error listing every problem.
pub fn run(root: &Path) -> anyhow::Result<usize> {
    let mut dirs = vec![root.join("xtask")];
    let crates = root.join("crates");
    for entry in
        std::fs::read_dir(&crates).with_context(|| format!("reading {}", crates.display()))?
    {
        let path = entry?.path();
        if path.join("src").is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    let mut problems = Vec::new();
    for dir in &dirs {
        problems.extend(check(&read_sources(dir)?));
    }
    if !problems.is_empty() {
        let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        bail!("the module rule is broken:\n  {}", listed.join("\n  "));
    }
    Ok(dirs.len())
}

/// Every `.rs` file under `dir/src`.
fn read_sources(dir: &Path) -> anyhow::Result<Sources> {
    let src = dir.join("src");
    let mut files = BTreeMap::new();
    let mut folders = vec![src.clone()];
    while let Some(folder) = folders.pop() {
        for entry in
            std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let relative = path
                    .strip_prefix(&src)?
                    .to_string_lossy()
                    .replace('\\', "/");
                files.insert(relative, text);
            }
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Sources { name, files })
}

/// The most lines a source file has, unless it is a module's tests (`tests.rs`).
pub const MAX_FILE_LINES: usize = 500;

/// The problems of one crate: its circles, `path` attributes, missing module files and
/// files over [`MAX_FILE_LINES`].
pub fn check(sources: &Sources) -> Vec<Problem> {
    let mut problems: Vec<Problem> = sources
        .files
        .iter()
        .filter(|(file, _)| !file.ends_with("tests.rs"))
        .map(|(file, text)| (file, text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_FILE_LINES)
        .map(|(file, lines)| Problem::TooLong {
            krate: sources.name.clone(),
            file: file.clone(),
            lines,
        })
        .collect();
    for root in sources.files.keys().filter(|f| is_crate_root(f)) {
        let tree = Tree::walk(sources, root, &mut problems);
        problems.extend(tree.circles(&sources.name));
    }
    problems
}

/// `lib.rs`, `main.rs`, `bin/x.rs` or `bin/x/main.rs`: a file Cargo compiles as a crate.
fn is_crate_root(file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    matches!(
        parts.as_slice(),
        ["lib.rs" | "main.rs"] | ["bin", _] | ["bin", _, "main.rs"]
    ) && file.ends_with(".rs")
}

/// The modules of one crate root and what each file says.
struct Tree {
    /// Every module, file and inline.
    modules: BTreeSet<ModulePath>,
    /// Each file with its module and what it says.
    files: Vec<(String, ModulePath, FileScan)>,
}

impl Tree {
    /// Follows the `mod` declarations from `root`.
    fn walk(sources: &Sources, root: &str, problems: &mut Vec<Problem>) -> Tree {
        let mut tree = Tree {
            modules: BTreeSet::from([Vec::new()]),
            files: Vec::new(),
        };
        let folder = root.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let mut queue = vec![(root.to_owned(), Vec::new(), folder)];
        while let Some((file, module, folder)) = queue.pop() {
            let Some(text) = sources.files.get(&file) else {
                continue;
            };
            let scan = parse::scan(text);
            for inline in &scan.inline_modules {
                tree.modules
                    .insert([module.clone(), inline.clone()].concat());
            }
            for decl in &scan.mod_decls {
                let at = Place {
                    file: file.clone(),
                    line: decl.line,
                };
                if let Some(line) = decl.path_attribute {
                    problems.push(Problem::PathAttribute {
                        krate: sources.name.clone(),
                        at: Place { line, ..at },
                    });
                    continue;
                }
                let child: ModulePath =
                    [module.clone(), decl.inline.clone(), vec![decl.name.clone()]].concat();
                let dir: String = std::iter::once(folder.as_str())
                    .chain(decl.inline.iter().map(String::as_str))
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("{s}/"))
                    .collect();
                let flat = format!("{dir}{}.rs", decl.name);
                let folded = format!("{dir}{}/mod.rs", decl.name);
                let found = [flat, folded]
                    .into_iter()
                    .find(|f| sources.files.contains_key(f));
                let Some(child_file) = found else {
                    problems.push(Problem::MissingFile {
                        krate: sources.name.clone(),
                        at,
                        module: display(&child),
                    });
                    continue;
                };
                tree.modules.insert(child.clone());
                queue.push((child_file, child, format!("{dir}{}", decl.name)));
            }
            tree.files.push((file, module, scan));
        }
        tree
    }

    /// The edges between siblings, each with the places that make it.
    fn edges(&self) -> BTreeMap<(ModulePath, ModulePath), BTreeMap<String, usize>> {
        let root_imports = self.root_imports();
        let mut edges: BTreeMap<(ModulePath, ModulePath), BTreeMap<String, usize>> =
            BTreeMap::new();
        for (file, module, scan) in &self.files {
            for reference in &scan.references {
                let from = [module.clone(), reference.inline.clone()].concat();
                let Some(path) = self.absolute(&from, reference) else {
                    continue;
                };
                let to = self.target(&path, &root_imports);
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                edges
                    .entry((from[..=common].to_vec(), to[..=common].to_vec()))
                    .or_default()
                    .entry(file.clone())
                    .or_insert(reference.line);
            }
        }
        edges
    }

    /// What the crate root's `use` items bind: each name to its path, and the glob imports'
    /// paths (both within the crate).
    fn root_imports(&self) -> (BTreeMap<String, ModulePath>, Vec<ModulePath>) {
        let mut names = BTreeMap::new();
        let mut globs = Vec::new();
        let root_files = self.files.iter().filter(|(_, module, _)| module.is_empty());
        for (_, _, scan) in root_files {
            for reference in scan
                .references
                .iter()
                .filter(|r| r.is_use && r.inline.is_empty())
            {
                let Some(path) = self.absolute(&[], reference) else {
                    continue;
                };
                match &reference.binds {
                    Some(name) => {
                        names.insert(name.clone(), path);
                    }
                    None => globs.push(path),
                }
            }
        }
        (names, globs)
    }

    /// The path `reference` names from module `from`, from the crate root; none when it
    /// leaves the crate.
    fn absolute(&self, from: &[String], reference: &Reference) -> Option<ModulePath> {
        let base: &[String] = match reference.start {
            Start::Crate => &[],
            Start::SelfModule => from,
            Start::Super(times) => from.get(..from.len().checked_sub(times)?)?,
            Start::Name => {
                let first = reference.segments.first()?;
                let child = [from, std::slice::from_ref(first)].concat();
                if !reference.is_use || !self.modules.contains(&child) {
                    return None;
                }
                from
            }
        };
        Some([base, reference.segments.as_slice()].concat())
    }

    /// The module `path` reaches: its longest prefix that is a module, following the root's
    /// imports for a name at the root.
    fn target(
        &self,
        path: &[String],
        (names, globs): &(BTreeMap<String, ModulePath>, Vec<ModulePath>),
    ) -> ModulePath {
        let mut path = path.to_vec();
        // A few steps: the root's imports may name each other.
        for _ in 0..8 {
            let module = (0..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|prefix| self.modules.contains(*prefix))
                .unwrap_or_default()
                .to_vec();
            if !module.is_empty() || path.is_empty() {
                return module;
            }
            path = match (names.get(&path[0]), globs.as_slice()) {
                (Some(source), _) => [source.as_slice(), &path[1..]].concat(),
                (None, [glob]) => [glob.as_slice(), &path].concat(),
                _ => return module,
            };
        }
        Vec::new()
    }

    /// The circles: strongly connected components of more than one module.
    fn circles(&self, krate: &str) -> Vec<Problem> {
        let edges = self.edges();
        let mut graph: BTreeMap<&ModulePath, Vec<&ModulePath>> = BTreeMap::new();
        for (from, to) in edges.keys() {
            graph.entry(from).or_default().push(to);
            graph.entry(to).or_default();
        }
        strongly_connected(&graph)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let members: BTreeSet<&ModulePath> = component.iter().copied().collect();
                let inside = edges
                    .iter()
                    .filter(|((from, to), _)| members.contains(from) && members.contains(to))
                    .map(|((from, to), places)| {
                        let places = places
                            .iter()
                            .map(|(file, line)| Place {
                                file: file.clone(),
                                line: *line,
                            })
                            .collect();
                        (display(from), display(to), places)
                    })
                    .collect();
                Problem::Circle {
                    krate: krate.to_owned(),
                    modules: members.iter().map(|m| display(m)).collect(),
                    edges: inside,
                }
            })
            .collect()
    }
}

/// `a::b`, or `crate` for the root.
fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Tarjan's strongly connected components of `graph`.
fn strongly_connected<'a>(
    graph: &BTreeMap<&'a ModulePath, Vec<&'a ModulePath>>,
) -> Vec<Vec<&'a ModulePath>> {
    struct State<'a> {
        next: usize,
        index: BTreeMap<&'a ModulePath, (usize, usize)>,
        stack: Vec<&'a ModulePath>,
        on_stack: BTreeSet<&'a ModulePath>,
        components: Vec<Vec<&'a ModulePath>>,
    }
    fn visit<'a>(
        node: &'a ModulePath,
        graph: &BTreeMap<&'a ModulePath, Vec<&'a ModulePath>>,
        state: &mut State<'a>,
    ) {
        let index = state.next;
        state.next += 1;
        state.index.insert(node, (index, index));
        state.stack.push(node);
        state.on_stack.insert(node);
        for &next in graph.get(node).into_iter().flatten() {
            let low = if let Some(&(next_index, _)) = state.index.get(next) {
                state.on_stack.contains(next).then_some(next_index)
            } else {
                visit(next, graph, state);
                state.index.get(next).map(|&(_, low)| low)
            };
            if let (Some(low), Some(entry)) = (low, state.index.get_mut(node)) {
                entry.1 = entry.1.min(low);
            }
        }
        if state.index.get(node).is_some_and(|&(i, low)| i == low) {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        next: 0,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(node, graph, &mut state);
        }
    }
    state.components
}
