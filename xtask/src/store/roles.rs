//! The cluster's roles, kept beside a backup as `NAME.roles.sql` (what
//! `pg_dumpall --roles-only` prints): a plain dump of one database holds none, and after
//! `docker compose down -v` a restore of objects owned by, or granted to, an application
//! role would fail or lose those grants.
//!
//! The file is never run as it is: pg_dumpall's output also alters roles that exist, and a
//! file from elsewhere could plant an administrator. It is parsed instead, and a restore
//! creates only the roles the cluster lacks, from attributes checked one by one, never
//! with SUPERUSER, REPLICATION or BYPASSRLS, and grants memberships only to the roles it
//! created. Passwords stay the hashes the server stored.

use std::collections::BTreeSet;

/// `NAME.roles.sql` beside the backup `NAME`.
pub const ROLES_SUFFIX: &str = ".roles.sql";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Roles {
    /// In the file's order.
    roles: Vec<Role>,
    /// (role, member): `GRANT role TO member`.
    grants: Vec<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
struct Role {
    name: String,
    /// The attributes as `CREATE ROLE ... WITH` takes them, rebuilt from checked tokens.
    options: Vec<String>,
    /// Why it may not be created, if so.
    refused: Option<String>,
}

/// What a restore does with the roles.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub statements: Vec<String>,
    pub created: Vec<String>,
    /// (role, why): missing, but not created.
    pub refused: Vec<(String, String)>,
}

impl Roles {
    /// Reads pg_dumpall's `--roles-only` output; lines it does not know are left out.
    pub fn parse(text: &str) -> Roles {
        let mut roles: Vec<Role> = Vec::new();
        let mut grants = Vec::new();
        for line in text.lines() {
            let Some(statement) = line.trim().strip_suffix(';') else { continue };
            if let Some(rest) = statement.strip_prefix("CREATE ROLE ") {
                if let Some((name, "")) = identifier(rest) {
                    roles.push(Role { name, options: Vec::new(), refused: None });
                }
            } else if let Some(rest) = statement.strip_prefix("ALTER ROLE ") {
                let Some((name, rest)) = identifier(rest) else { continue };
                let Some(attributes) = rest.strip_prefix("WITH ") else { continue };
                if let Some(role) = roles.iter_mut().find(|role| role.name == name) {
                    match options(attributes) {
                        Ok(options) => role.options = options,
                        Err(why) => role.refused = Some(why),
                    }
                }
            } else if let Some(rest) = statement.strip_prefix("GRANT ") {
                let Some((role, rest)) = identifier(rest) else { continue };
                let Some((member, _)) = rest.strip_prefix("TO ").and_then(identifier) else { continue };
                grants.push((role, member));
            }
        }
        Roles { roles, grants }
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// Creates what `existing` lacks, and nothing else.
    pub fn plan(&self, existing: &BTreeSet<String>) -> Plan {
        let mut plan = Plan::default();
        for role in self.roles.iter().filter(|role| !existing.contains(&role.name)) {
            match &role.refused {
                Some(why) => plan.refused.push((role.name.clone(), why.clone())),
                None => {
                    let with = if role.options.is_empty() {
                        String::new()
                    } else {
                        format!(" WITH {}", role.options.join(" "))
                    };
                    plan.statements.push(format!("CREATE ROLE {}{with}", ident(&role.name)));
                    plan.created.push(role.name.clone());
                }
            }
        }
        // Memberships change their member: only the roles created now get theirs.
        for (role, member) in &self.grants {
            let role_there = existing.contains(role) || plan.created.contains(role);
            if plan.created.contains(member) && role_there {
                plan.statements.push(format!("GRANT {} TO {}", ident(role), ident(member)));
            }
        }
        plan
    }
}

/// The attributes pg_dumpall writes, each checked: anything unknown, or an administrator's
/// power, refuses the role.
fn options(text: &str) -> Result<Vec<String>, String> {
    const PLAIN: [&str; 11] = [
        "INHERIT",
        "NOINHERIT",
        "CREATEROLE",
        "NOCREATEROLE",
        "CREATEDB",
        "NOCREATEDB",
        "LOGIN",
        "NOLOGIN",
        "NOSUPERUSER",
        "NOREPLICATION",
        "NOBYPASSRLS",
    ];
    let mut options = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        rest = after.trim_start();
        match word {
            "SUPERUSER" | "REPLICATION" | "BYPASSRLS" => return Err(word.to_owned()),
            plain if PLAIN.contains(&plain) => options.push(plain.to_owned()),
            "CONNECTION" => {
                let (limit, after) = rest
                    .strip_prefix("LIMIT ")
                    .and_then(|r| r.split_once(' ').or(Some((r, ""))))
                    .ok_or("CONNECTION")?;
                let limit: i64 = limit.parse().map_err(|_| format!("CONNECTION LIMIT {limit}"))?;
                options.push(format!("CONNECTION LIMIT {limit}"));
                rest = after.trim_start();
            }
            "PASSWORD" | "VALID" => {
                let after_word = if word == "VALID" { rest.strip_prefix("UNTIL ").ok_or("VALID")? } else { rest };
                let (value, after) = quoted(after_word).ok_or_else(|| format!("{word} without a quoted value"))?;
                let keyword = if word == "VALID" { "VALID UNTIL" } else { "PASSWORD" };
                options.push(format!("{keyword} {}", literal(&value)));
                rest = after.trim_start();
            }
            other => return Err(format!("unknown attribute {other}")),
        }
    }
    Ok(options)
}

/// A role name at the start of `text` (bare, or double-quoted with `""` inside), and what follows
/// it after one space (or nothing).
fn identifier(text: &str) -> Option<(String, &str)> {
    let (name, rest) = if text.starts_with('"') {
        delimited(text, '"')?
    } else {
        let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')).unwrap_or(text.len());
        if end == 0 {
            return None;
        }
        (text[..end].to_owned(), &text[end..])
    };
    Some((name, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// A single-quoted SQL literal at the start of `text` (`''` inside), and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    delimited(text, '\'')
}

/// What `text` holds between its opening `mark` and the closing one, a doubled mark
/// standing for itself (SQL's rule for identifiers and literals), and what follows.
fn delimited(text: &str, mark: char) -> Option<(String, &str)> {
    let inner = text.strip_prefix(mark)?;
    let mut value = String::new();
    let mut chars = inner.char_indices();
    loop {
        let (at, c) = chars.next()?;
        if c == mark {
            if inner[at + c.len_utf8()..].starts_with(mark) {
                value.push(mark);
                chars.next();
                continue;
            }
            return Some((value, &inner[at + c.len_utf8()..]));
        }
        value.push(c);
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMPALL: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict KEY

SET default_transaction_read_only = off;

CREATE ROLE "Odd Role";
ALTER ROLE "Odd Role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL '2030-01-01 00:00:00+00';
CREATE ROLE admin2;
ALTER ROLE admin2 WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:jv==$jS=:qs=';
CREATE ROLE "user";
ALTER ROLE "user" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:x';
CREATE ROLE sneaky;
ALTER ROLE sneaky WITH LOGIN; DROP TABLE t;
ALTER ROLE app SET search_path TO 'public';

GRANT app TO "Odd Role" GRANTED BY "user";
GRANT app TO "user" WITH INHERIT TRUE GRANTED BY "user";

\unrestrict KEY
"#;

    #[test]
    fn only_missing_roles_are_created_from_checked_attributes() {
        let roles = Roles::parse(DUMPALL);
        let existing: BTreeSet<String> = ["user".to_owned()].into();
        let plan = roles.plan(&existing);
        assert_eq!(
            plan.statements,
            [
                r#"CREATE ROLE "Odd Role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL '2030-01-01 00:00:00+00'"#,
                r#"CREATE ROLE "app" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:jv==$jS=:qs='"#,
                r#"GRANT "app" TO "Odd Role""#,
            ]
        );
        assert_eq!(plan.created, ["Odd Role", "app"]);
        // The administrator is reported, not created; a line with more than attributes
        // in it refuses its role.
        assert_eq!(plan.refused[0], ("admin2".to_owned(), "SUPERUSER".to_owned()));
        assert_eq!(plan.refused[1].0, "sneaky");
        // The existing role is never changed: no grant to it.
        assert!(!plan.statements.iter().any(|s| s.ends_with(r#"TO "user""#)));
    }

    #[test]
    fn a_cluster_that_has_every_role_gets_nothing() {
        let roles = Roles::parse(DUMPALL);
        let all: BTreeSet<String> =
            ["Odd Role", "admin2", "app", "user", "sneaky"].into_iter().map(str::to_owned).collect();
        assert_eq!(roles.plan(&all), Plan::default());
        assert!(Roles::parse("").is_empty());
    }

    #[test]
    fn names_and_literals_are_read_as_postgres_writes_them() {
        assert_eq!(identifier(r#""a ""b"" c" WITH x"#), Some((r#"a "b" c"#.to_owned(), "WITH x")));
        assert_eq!(identifier("app"), Some(("app".to_owned(), "")));
        assert_eq!(identifier("; x"), None);
        assert_eq!(quoted("'it''s' rest"), Some(("it's".to_owned(), " rest")));
        assert_eq!(quoted("'unterminated"), None);
        assert!(options("LOGIN PASSWORD 'a''b'").unwrap().contains(&"PASSWORD 'a''b'".to_owned()));
        assert!(options("LOGIN ; DROP").is_err());
    }
}
