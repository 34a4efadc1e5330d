//! The README's "Architecture of shm-core" section, as a test: the crate's files import in
//! layers, bottom up, with no import circle, and `testkit` uses only the public API.
//!
//! It reads the `use` lines and the `crate::`/`super::` paths of every file under `src/`
//! (text, not a compiler: a path hidden in a macro or reached only through a method call
//! is not seen, which is why the rule is about imports). A name imported from the crate
//! root counts as an import of the module the root re-exports it from.
//!
//! Only on Linux, and not under miri (isolation forbids reading files): the sources are
//! the same for every target, so the Windows (Wine) and QNX builds leave it out.
#![cfg(all(target_os = "linux", not(miri)))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and their layer, as the README lists them (1 = bottom). A module
/// missing here fails the test: a new module must be placed in a layer.
const LAYERS: &[(&str, u8)] = &[
    ("offset", 1),
    ("ids", 1),
    ("error", 1),
    ("os", 1),
    ("region", 2),
    ("format", 3),
    ("journal", 4),
    ("lock", 4),
    ("queue", 4),
    ("platform", 4),
    ("system", 4),
    ("heap", 5),
    ("protocol", 6),
    ("global_alloc", 7),
    ("testkit", 7),
];

/// Modules whose files may use only what the crate exports (the root's re-exports and its
/// `pub mod`s).
const PUBLIC_API_ONLY: &[&str] = &["testkit"];

/// The private modules the test kit may still reach, each with its reason. The region
/// lock's wait protocol has no public call of its own (every heap operation takes the lock
/// inside); `testkit::lock_acquire` and `lock_release` are its one door, for
/// `tests/lock_waits.rs`.
const TESTKIT_DOORS: &[(&str, &str)] = &[("testkit", "lock")];

/// A module path inside the crate, `""` for the root, `"heap::ops"` for `src/heap/ops.rs`.
type ModPath = String;

struct Crate {
    files: BTreeMap<ModPath, String>,
    /// Name re-exported at the root -> the top-level module it comes from.
    root_exports: BTreeMap<String, ModPath>,
    /// Per module: name it re-exports (`pub use` / `pub(crate) use`) -> the path it names.
    reexports: BTreeMap<ModPath, BTreeMap<String, String>>,
    /// Top-level modules declared `pub mod` in lib.rs.
    public_modules: BTreeSet<String>,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file as it counts here: without `//` comments (doc comments name paths
/// that are not imports) and without its unit-test module (`#[cfg(test)] mod tests`, at
/// the end of a file by convention), whose `super::` means the file itself.
fn strip_comments(text: &str) -> String {
    let code = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let mut from = 0;
    while let Some(i) = code[from..].find("#[cfg(test)]") {
        let at = from + i;
        // Skip further attributes between `#[cfg(test)]` and the item.
        let mut rest = code[at + "#[cfg(test)]".len()..].trim_start();
        while rest.starts_with("#[") {
            rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        }
        if rest.starts_with("mod ") {
            return code[..at].to_string();
        }
        from = at + 1;
    }
    code
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`, no trailing `;`) into full paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split("as").next().unwrap_or(&tree).to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let body = &tree[open + 1..tree.len() - 1];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, ch) in body.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(expand_use)
        .map(|p| {
            if prefix.is_empty() {
                p
            } else if p == "self" {
                prefix.to_string()
            } else {
                format!("{prefix}::{p}")
            }
        })
        .collect()
}

/// Every path a file imports or names: its `use` trees (not its `pub use` re-exports,
/// which are the module's table of contents, not something it uses) and the
/// `crate::`/`super::`/`self::`/`child::` paths in its code (`children`: the modules the
/// file declares).
fn paths_in(code: &str, children: &[String]) -> Vec<String> {
    let mut paths = Vec::new();
    // The code with every `use` statement cut out, for the path scan below.
    let mut body = String::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else { break };
        let line_start = rest[..at].rfind(['\n', ';', '}']).map_or(0, |i| i + 1);
        if !rest[line_start..at].contains("pub") {
            paths.extend(expand_use(&after[..end]));
        }
        body.push_str(&rest[..line_start]);
        rest = &after[end..];
    }
    body.push_str(rest);
    let code = body.as_str();
    let child_roots: Vec<String> = children.iter().map(|c| format!("{c}::")).collect();
    let roots = ["crate::", "super::", "self::"]
        .into_iter()
        .map(String::from)
        .chain(child_roots);
    for root in roots {
        let root = root.as_str();
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before_ok = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // `crate::a::{...}` is a use tree, read above.
            let group = rest[at + path.len()..].starts_with('{');
            if before_ok && !group {
                paths.push(path.trim_end_matches(':').to_string());
            }
            rest = &rest[at + root.len()..];
        }
    }
    paths
}

/// Position of `word` as a whole word starting a statement (`use`, `pub use`,
/// `pub(crate) use`).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if before.is_none_or(|c| c.is_whitespace() || c == ')' || c == ';' || c == '{')
            && after.is_some_and(char::is_whitespace)
        {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

impl Crate {
    fn read() -> Crate {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut list = Vec::new();
        collect(&src, &mut list);
        let files: BTreeMap<ModPath, String> = list
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).expect("a readable source file");
                (module_of(&src, f), strip_comments(&text))
            })
            .collect();
        let lib = files.get("").expect("src/lib.rs");
        let mut root_exports = BTreeMap::new();
        let mut public_modules = BTreeSet::new();
        for stmt in lib.split(';') {
            let stmt = stmt.trim();
            if let Some(tree) = stmt
                .rsplit("pub use ")
                .next()
                .filter(|_| stmt.contains("pub use "))
            {
                for path in expand_use(tree) {
                    let module = path.split("::").next().unwrap_or_default().to_string();
                    let name = path.rsplit("::").next().unwrap_or_default().to_string();
                    root_exports.insert(name, module);
                }
            }
            if let Some(name) = stmt
                .rsplit("pub mod ")
                .next()
                .filter(|_| stmt.contains("pub mod "))
            {
                public_modules.insert(name.trim().to_string());
            }
        }
        let mut reexports: BTreeMap<ModPath, BTreeMap<String, String>> = BTreeMap::new();
        for (module, code) in &files {
            for stmt in code.split(';') {
                let Some((_, tree)) = stmt.split_once("use ") else {
                    continue;
                };
                let head = stmt.split("use ").next().unwrap_or_default();
                if !head.contains("pub") {
                    continue;
                }
                for path in expand_use(tree) {
                    let name = path.rsplit("::").next().unwrap_or_default().to_string();
                    reexports
                        .entry(module.clone())
                        .or_default()
                        .insert(name, path);
                }
            }
        }
        Crate {
            files,
            root_exports,
            reexports,
            public_modules,
        }
    }

    /// The module a path written in module `from` leads to (the longest known prefix),
    /// with names from the root resolved through its re-exports. `None` for paths outside
    /// the crate.
    fn resolve(&self, from: &str, path: &str) -> Option<ModPath> {
        let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Vec<&str> = if from.is_empty() {
            Vec::new()
        } else {
            from.split("::").collect()
        };
        match segs.first() {
            Some(&"crate") => {
                base.clear();
                segs.remove(0);
            }
            Some(&"super") => {
                while segs.first() == Some(&"super") {
                    base.pop();
                    segs.remove(0);
                }
            }
            Some(&"self") => {
                segs.remove(0);
            }
            Some(first) => {
                // A bare path starts at a child module, or is outside the crate.
                let child = if from.is_empty() {
                    first.to_string()
                } else {
                    format!("{from}::{first}")
                };
                if !self.files.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        let full: Vec<&str> = base.into_iter().chain(segs.iter().copied()).collect();
        self.resolve_full(&full, 0)
    }

    /// Resolves an absolute path (segments after `crate`): the longest prefix that is a
    /// module, then, if the next segment is a name that module re-exports, the module it
    /// re-exports it from (a facade's `pub use child::X` is not an import of the facade).
    fn resolve_full(&self, full: &[&str], depth: usize) -> Option<ModPath> {
        for len in (0..=full.len()).rev() {
            let candidate = full[..len].join("::");
            if !self.files.contains_key(&candidate) {
                continue;
            }
            let next = full.get(len);
            let target = next.and_then(|n| self.reexports.get(&candidate)?.get(*n));
            return match target {
                Some(path) if depth < 8 => {
                    let owner = self.resolve(&candidate, path)?;
                    let owner_segs: Vec<&str> =
                        owner.split("::").filter(|s| !s.is_empty()).collect();
                    let item = path.rsplit("::").next().unwrap_or_default();
                    let mut again = owner_segs;
                    again.push(item);
                    self.resolve_full(&again, depth + 1)
                }
                _ if candidate.is_empty() => None,
                _ => Some(candidate),
            };
        }
        None
    }

    /// The modules `module` declares (its files' names below it).
    fn children(&self, module: &str) -> Vec<String> {
        self.files
            .keys()
            .filter_map(|k| {
                let rest = if module.is_empty() {
                    k.as_str()
                } else {
                    k.strip_prefix(module)?.strip_prefix("::")?
                };
                (!rest.is_empty() && !rest.contains("::")).then(|| rest.to_string())
            })
            .collect()
    }

    /// File-level import edges (module -> module it imports from), without self-edges.
    fn edges(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let mut edges = BTreeMap::new();
        for (module, code) in &self.files {
            if module.is_empty() {
                continue;
            }
            let targets: BTreeSet<ModPath> = paths_in(code, &self.children(module))
                .iter()
                .filter_map(|p| self.resolve(module, p))
                .filter(|t| t != module && !t.is_empty())
                .collect();
            edges.insert(module.clone(), targets);
        }
        edges
    }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == top(module))
        .map(|(_, l)| *l)
        .unwrap_or_else(|| {
            panic!("module `{module}` is in no layer: add it to LAYERS and the README")
        })
}

#[test]
fn every_import_points_to_the_same_layer_or_below() {
    let krate = Crate::read();
    let mut upward = Vec::new();
    for (from, targets) in krate.edges() {
        for to in targets {
            if layer(&to) > layer(&from) {
                upward.push(format!(
                    "{from} (layer {}) -> {to} (layer {})",
                    layer(&from),
                    layer(&to)
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_import_graph_has_no_circle() {
    let edges = Crate::read().edges();
    // Depth-first search with colours: reaching a module that is still on the stack is a
    // circle, reported as the path around it.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnStack,
        Done,
    }
    fn visit(
        m: &str,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(m.to_string(), Mark::OnStack);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::OnStack) => {
                    let start = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut circle = stack[start..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, edges, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in edges.keys() {
        if !marks.contains_key(m) {
            if let Some(circle) = visit(m, &edges, &mut marks, &mut Vec::new()) {
                panic!("import circle: {}", circle.join(" -> "));
            }
        }
    }
}

#[test]
fn testkit_uses_only_the_public_api() {
    let krate = Crate::read();
    let mut private = Vec::new();
    for (module, code) in &krate.files {
        if !PUBLIC_API_ONLY.contains(&top(module)) {
            continue;
        }
        for path in paths_in(code, &[]) {
            let Some(rest) = path.strip_prefix("crate::") else {
                continue;
            };
            let first = rest.split("::").next().unwrap_or_default();
            let exported = krate.root_exports.contains_key(first)
                || krate.public_modules.contains(first)
                || PUBLIC_API_ONLY.contains(&first)
                || TESTKIT_DOORS.contains(&(module.as_str(), first));
            if !exported {
                private.push(format!("{module}: {path}"));
            }
        }
    }
    assert!(
        private.is_empty(),
        "testkit reaches private items:\n{}",
        private.join("\n")
    );
}

/// The checker itself finds what it must: an upward import, a circle, a re-exported name.
#[test]
fn the_checker_sees_use_trees_and_root_reexports() {
    assert_eq!(
        expand_use("crate::{a::{B, c::D}, e::F as G}"),
        ["crate::a::B", "crate::a::c::D", "crate::e::F"]
    );
    let krate = Crate::read();
    assert_eq!(
        krate.resolve("protocol::server", "crate::Heap").as_deref(),
        Some("heap")
    );
    assert_eq!(
        krate.resolve("heap::ops", "super::space::Space").as_deref(),
        Some("heap::space")
    );
    assert_eq!(
        krate.resolve("heap", "ops::free").as_deref(),
        Some("heap::ops")
    );
    assert_eq!(krate.resolve("heap", "core::mem"), None);
    let edges = krate.edges();
    assert!(edges["protocol::server"].iter().any(|t| top(t) == "heap"));
    assert!(edges.len() > 40, "every file is read");
}
