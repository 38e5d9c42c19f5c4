//! The module rule on small crates written here.

use super::*;

fn sources(files: &[(&str, &str)]) -> Sources {
    Sources {
        name: "demo".into(),
        files: files
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect(),
    }
}

/// The modules of each circle found.
fn circles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    check(&sources(files))
        .into_iter()
        .map(|problem| match problem {
            Problem::Circle { modules, .. } => modules,
            other => panic!("not a circle: {other}"),
        })
        .collect()
}

#[test]
fn two_modules_importing_each_other_are_a_circle_with_the_places_named() {
    let problems = check(&sources(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "//! A.\n\nuse crate::b::B;\npub struct A;\n"),
        ("b.rs", "use crate::a::{self, A};\npub struct B;\n"),
    ]));
    assert_eq!(
        problems,
        vec![Problem::Circle {
            krate: "demo".into(),
            modules: vec!["a".into(), "b".into()],
            edges: vec![
                (
                    "a".into(),
                    "b".into(),
                    vec![Place {
                        file: "a.rs".into(),
                        line: 3
                    }]
                ),
                (
                    "b".into(),
                    "a".into(),
                    vec![Place {
                        file: "b.rs".into(),
                        line: 1
                    }]
                ),
            ],
        }]
    );
    assert_eq!(
        problems[0].to_string(),
        "demo: a, b import each other:\n    a → b (src/a.rs:3)\n    b → a (src/b.rs:1)"
    );
}

#[test]
fn a_circle_through_a_third_module_is_one_circle_of_three() {
    assert_eq!(
        circles(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
            ("a.rs", "use crate::b::B;"),
            ("b.rs", "fn f() { crate::c::g(); }"),
            ("c.rs", "use crate::{a, d};"),
            ("d.rs", ""),
        ]),
        vec![vec!["a".to_owned(), "b".into(), "c".into()]]
    );
}

#[test]
fn a_graph_without_circles_passes() {
    assert_eq!(
        check(&sources(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::A;\n"),
            ("a.rs", "use crate::b::B;\nuse crate::c::C;\n"),
            ("b.rs", "use crate::c::{C, D};\n"),
            ("c.rs", "pub struct C;\n"),
        ])),
        vec![]
    );
}

#[test]
fn parts_using_their_parent_and_the_parent_using_its_parts_are_no_circle() {
    assert_eq!(
        check(&sources(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a/mod.rs",
                "mod part;\nuse part::X;\nuse self::part::Y;\npub struct Z;\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
            ),
            (
                "a/part.rs",
                "use super::*;\nuse crate::a::Z;\nuse crate::b::W;\n"
            ),
            ("b.rs", "pub struct W;\nfn f() { crate::b::g(); }\n"),
        ])),
        vec![]
    );
}

#[test]
fn parts_of_two_siblings_importing_each_other_make_the_siblings_a_circle() {
    let problems = check(&sources(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "mod x;\n"),
        ("a/x.rs", "use crate::b::y::Y;\n"),
        ("b/mod.rs", "pub mod y;\n"),
        ("b/y.rs", "\n\nuse crate::a::x::X;\n"),
    ]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].to_string(),
        "demo: a, b import each other:\n    a → b (src/a/x.rs:1)\n    b → a (src/b/y.rs:3)"
    );
}

#[test]
fn siblings_inside_a_module_are_checked_among_themselves() {
    assert_eq!(
        circles(&[
            ("lib.rs", "mod outer;\n"),
            ("outer/mod.rs", "mod x;\nmod y;\n"),
            ("outer/x.rs", "use super::y::Y;\n"),
            ("outer/y.rs", "use crate::outer::x::X;\n"),
        ]),
        vec![vec!["outer::x".to_owned(), "outer::y".into()]]
    );
}

#[test]
fn a_use_only_tests_make_still_closes_a_circle() {
    assert_eq!(
        circles(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "use crate::b::B;\n"),
            (
                "b.rs",
                "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n"
            ),
        ]),
        vec![vec!["a".to_owned(), "b".into()]]
    );
}

#[test]
fn names_the_root_re_exports_are_followed_to_their_module() {
    assert_eq!(
        circles(&[
            (
                "lib.rs",
                "mod a;\nmod b;\nmod c;\npub use a::A;\npub use b::*;\n"
            ),
            // `crate::B` comes from the glob, `crate::A` from `pub use a::A`.
            ("a.rs", "fn f() -> crate::B { todo!() }\n"),
            ("b.rs", "use crate::A;\n"),
            ("c.rs", "use crate::{A, B};\n"),
        ]),
        vec![vec!["a".to_owned(), "b".into()]]
    );
}

#[test]
fn super_counts_from_the_inline_module_it_is_in() {
    assert_eq!(
        circles(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "mod inner {\n    fn f() { super::super::b::g(); }\n}\n"
            ),
            ("b.rs", "use crate::a::A;\n"),
        ]),
        vec![vec!["a".to_owned(), "b".into()]]
    );
}

#[test]
fn braces_in_literals_do_not_move_module_bounds() {
    // If `mod tests` seemed still open, `super::b` would name `a::b` (no module, so `a`).
    let a = "mod tests {\n    fn f() {\n        let _ = '{';\n        let _ = \"{\";\n        let _ = r#\"{\"#;\n        let _ = r#\"\"{\"#;\n        let _ = b'{';\n        /* { */\n        // {\n        let _: &'static str = \"\";\n    }\n}\nuse super::b::B;\n";
    assert_eq!(
        circles(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", a),
            ("b.rs", "use crate::a::A;\n"),
        ]),
        vec![vec!["a".to_owned(), "b".into()]]
    );
}

#[test]
fn paths_in_comments_and_strings_are_not_uses() {
    assert_eq!(
        check(&sources(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "//! See [`crate::b::B`].\n// use crate::b::B;\nconst S: &str = \"crate::b::B\";\n"
            ),
            ("b.rs", "use crate::a::A;\n"),
        ])),
        vec![]
    );
}

#[test]
fn a_path_attribute_and_a_missing_file_are_reported() {
    assert_eq!(
        check(&sources(&[
            (
                "lib.rs",
                // `\x5b` is `[`: grepping the tree for the attribute finds only real ones.
                "mod a;\n#\x5bpath = \"a_more.rs\"]\nmod more;\nmod gone;\n"
            ),
            ("a.rs", ""),
            ("a_more.rs", ""),
        ])),
        vec![
            Problem::PathAttribute {
                krate: "demo".into(),
                at: Place {
                    file: "lib.rs".into(),
                    line: 2
                },
            },
            Problem::MissingFile {
                krate: "demo".into(),
                at: Place {
                    file: "lib.rs".into(),
                    line: 4
                },
                module: "gone".into(),
            },
        ]
    );
}

#[test]
fn each_binary_is_a_crate_of_its_own_with_its_modules_beside_it() {
    assert_eq!(
        circles(&[
            ("lib.rs", "pub mod a;\n"),
            ("a.rs", ""),
            ("main.rs", "fn main() { demo::a::f(); }\n"),
            ("bin/tool.rs", "mod x;\nmod y;\n"),
            ("bin/x.rs", "use crate::y::Y;\n"),
            ("bin/y.rs", "use crate::x::X;\n"),
        ]),
        vec![vec!["x".to_owned(), "y".into()]]
    );
}

#[test]
fn this_workspace_has_no_import_circle_and_no_path_attribute() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    match super::run(&root) {
        Ok(crates) => assert!(crates >= 6, "only {crates} crates read"),
        Err(error) => panic!("{error:#}"),
    }
}

#[test]
fn a_file_over_the_size_limit_is_named_but_its_tests_are_not() {
    let long = "fn f() {}\n".repeat(super::MAX_FILE_LINES + 1);
    let sources = super::Sources {
        name: "demo".into(),
        files: [
            ("lib.rs".to_owned(), "mod big;\n".to_owned()),
            (
                "big.rs".to_owned(),
                format!("{long}#[cfg(test)]\nmod tests;\n"),
            ),
            ("big/tests.rs".to_owned(), long.clone()),
        ]
        .into_iter()
        .collect(),
    };
    let problems: Vec<String> = super::check(&sources)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        vec![format!(
            "demo: src/big.rs has {} lines, over 500: split it into parts named for what they do",
            super::MAX_FILE_LINES + 3
        )]
    );
}
