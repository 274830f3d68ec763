//! The PostgreSQL store keeps away from the features `docs/scaling.md` lists as avoided (session
//! state, advisory locks, sequences, …): the list is read from that document, and the SQL — the
//! string literals of `src/**/*.rs` and the migrations without comments — is searched for each
//! forbidden pattern. No database needed.

use std::path::{Path, PathBuf};

const BEGIN: &str = "<!-- avoided-features:begin -->";
const END: &str = "<!-- avoided-features:end -->";

/// One row of the document's table.
#[derive(Debug)]
struct Avoided {
    feature: String,
    forbidden: Vec<String>,
    allowed: Vec<String>,
}

/// SQL text to search, with where it came from.
struct Fragment {
    origin: String,
    text: String,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The backticked items of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The rows of the table between the markers of `docs/scaling.md`.
fn avoided_features(doc: &str) -> Vec<Avoided> {
    let start = doc.find(BEGIN).expect("the avoided-features begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the avoided-features end marker");
    doc[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row has four cells: {line}");
            Avoided {
                feature: cells[0].to_string(),
                forbidden: backticked(cells[1]),
                allowed: backticked(cells[2]),
            }
        })
        .collect()
}

/// The contents of the string literals of Rust source (normal and raw strings), without
/// comments. Escapes become the character they stand for; a line continuation (`\` at the end
/// of a line) becomes one space.
fn rust_strings(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            // A character literal ('x', '\n', '\''); anything else after `'` is a lifetime.
            '\'' if chars.get(i + 2) == Some(&'\'') && chars.get(i + 1) != Some(&'\\') => i += 3,
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            'r' if matches!(chars.get(i + 1), Some('"' | '#'))
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = chars[j + 1..].iter().collect();
                let len = rest.find(&closing).expect("closed raw string");
                out.push(rest[..len].to_string());
                i = j + 1 + rest[..len].chars().count() + closing.chars().count();
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                        match chars.get(i) {
                            Some('\n') => {
                                while chars.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                                    i += 1;
                                }
                                text.push(' ');
                            }
                            Some('n' | 't' | 'r') => text.push(' '),
                            Some(&c) => text.push(c),
                            None => {}
                        }
                    } else {
                        text.push(chars[i]);
                    }
                    i += 1;
                }
                out.push(text);
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// SQL without `--` comments.
fn sql_without_comments(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lower case, every run of whitespace one space.
fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where `pattern` (see the document: `^` = statement start, `*` = any continuation of the word,
/// whole words otherwise) matches in normalized `text`.
fn find(text: &str, pattern: &str) -> Option<usize> {
    let at_start = pattern.starts_with('^');
    let prefix = pattern.ends_with('*');
    let needle = normalize(pattern.trim_start_matches('^').trim_end_matches('*'));
    let mut from = 0;
    while let Some(found) = text[from..].find(&needle) {
        let at = from + found;
        from = at + needle.len();
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let starts_word = !needle.starts_with(is_word) || !before.is_some_and(is_word);
        let ends_word = prefix || !needle.ends_with(is_word) || !after.is_some_and(is_word);
        let statement_start =
            !at_start || matches!(text[..at].trim_end().chars().next_back(), None | Some(';'));
        if starts_word && ends_word && statement_start {
            return Some(at);
        }
    }
    None
}

/// Every (feature, pattern, origin, excerpt) that breaks the list.
fn violations(list: &[Avoided], fragments: &[Fragment]) -> Vec<String> {
    let mut found = Vec::new();
    for fragment in fragments {
        let text = normalize(&fragment.text);
        for avoided in list {
            let mut text = text.clone();
            for allowed in &avoided.allowed {
                text = text.replace(&normalize(allowed), " ");
            }
            for pattern in &avoided.forbidden {
                if let Some(at) = find(&text, pattern) {
                    let excerpt: String = text[at..].chars().take(60).collect();
                    found.push(format!(
                        "{}: {} (`{pattern}`): …{excerpt}…",
                        fragment.origin, avoided.feature
                    ));
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The SQL of the PostgreSQL store: string literals of `src/**/*.rs`, and the migrations.
fn store_sql() -> Vec<Fragment> {
    let root = crate_dir();
    let mut fragments = Vec::new();
    let mut sources = Vec::new();
    rust_files(&root.join("src"), &mut sources);
    assert!(sources.len() >= 3, "the store's sources: {sources:?}");
    for path in sources {
        let source = std::fs::read_to_string(&path).expect("read source");
        for text in rust_strings(&source) {
            fragments.push(Fragment {
                origin: path.display().to_string(),
                text,
            });
        }
    }
    let mut migrations = 0;
    for entry in std::fs::read_dir(root.join("migrations")).expect("migrations") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let sql = std::fs::read_to_string(&path).expect("read migration");
            fragments.push(Fragment {
                origin: path.display().to_string(),
                text: sql_without_comments(&sql),
            });
            migrations += 1;
        }
    }
    assert!(migrations >= 2, "the migrations are read");
    fragments
}

fn documented_list() -> Vec<Avoided> {
    let doc = crate_dir().join("../../docs/scaling.md");
    let doc = std::fs::read_to_string(&doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let list = avoided_features(&doc);
    assert!(list.len() >= 10, "the table was read: {list:?}");
    for avoided in &list {
        assert!(
            !avoided.forbidden.is_empty(),
            "{} lists no pattern",
            avoided.feature
        );
    }
    list
}

#[test]
fn the_store_sql_uses_none_of_the_avoided_features() {
    let list = documented_list();
    let fragments = store_sql();
    // The scan sees the SQL it is meant to see.
    let all: String = fragments
        .iter()
        .map(|f| normalize(&f.text))
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "for update",
        "begin isolation level repeatable read",
        "set local statement_timeout",
        "create table accounts",
        "insert into ledger_commits",
    ] {
        assert!(all.contains(expected), "the scan misses `{expected}`");
    }
    let found = violations(&list, &fragments);
    assert!(
        found.is_empty(),
        "avoided features in the PostgreSQL store (docs/scaling.md, Avoided):\n{}",
        found.join("\n")
    );
}

/// The scanner finds what it must and only that: samples of forbidden SQL in Rust and in a
/// migration, and look-alikes that are allowed.
#[test]
fn the_scanner_finds_forbidden_samples() {
    let list = documented_list();
    let rust = |source: &str| {
        rust_strings(source)
            .into_iter()
            .map(|text| Fragment {
                origin: "sample.rs".into(),
                text,
            })
            .collect::<Vec<_>>()
    };
    let sql = |text: &str| {
        vec![Fragment {
            origin: "sample.sql".into(),
            text: sql_without_comments(text),
        }]
    };
    for forbidden in [
        r#"sqlx::query("SELECT pg_advisory_xact_lock($1)")"#,
        r#"conn.execute("LISTEN ledger")"#,
        r#"q("SELECT 1; SET statement_timeout = 5")"#,
        r#"q("SET SESSION lock_timeout = 5")"#,
        "q(\"CREATE TEMP TABLE t (id uuid)\")",
        r##"q(r#"SELECT nextval('ids')"#)"##,
        "q(\"SELECT id FROM accounts \\\n   FOR UPDATE SKIP LOCKED\")",
        r#"q("select xmin from accounts")"#,
    ] {
        assert!(
            !violations(&list, &rust(forbidden)).is_empty(),
            "not found: {forbidden}"
        );
    }
    for forbidden in [
        "CREATE TABLE a (id BIGSERIAL PRIMARY KEY);",
        "CREATE SEQUENCE s;",
        "SELECT 1;\nLOCK TABLE accounts;",
        "CREATE UNLOGGED TABLE x (id int);",
    ] {
        assert!(
            !violations(&list, &sql(forbidden)).is_empty(),
            "not found: {forbidden}"
        );
    }
    for allowed in [
        r#"q("BEGIN ISOLATION LEVEL SERIALIZABLE")"#,
        r#"q("BEGIN; SET LOCAL lock_timeout = 5")"#,
        r#"q("UPDATE accounts AS a SET balance = u.balance FROM unnest($1) AS u(balance)")"#,
        r#"q("INSERT INTO t (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")"#,
        "// LISTEN, pg_advisory_lock and nextval in a comment\nlet x = 'a';",
        r#"q("SELECT listen_addresses, serial_number, setting FROM t")"#,
    ] {
        let found = violations(&list, &rust(allowed));
        assert!(found.is_empty(), "{allowed}: {found:?}");
    }
    assert!(violations(&list, &sql("-- nextval( only in a comment\nSELECT 1;")).is_empty());
}
