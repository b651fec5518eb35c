//! Alembic revisions as the application writes them (issue 11): ids like `2026050201`
//! and `20240915_merge_heads`, two heads in `alembic_version` while branches are
//! unmerged, and their merge, through db-backup, db-list, db-verify and db-restore with
//! the real Alembic and uv (the `alembic_app` fixture).

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::testbed::{Bed, Flavor, Run, alembic_app_dir, python_json, uv_turn};

const ROOT: &str = "2026042900";
const TAGS: &str = "2026050201";
const RLS: &str = "rls_policies_20240915";
const MERGE: &str = "20240915_merge_heads";

/// `alembic_version`'s rows, sorted.
fn rows(bed: &Bed) -> Vec<String> {
    bed.psql("SELECT version_num FROM alembic_version ORDER BY version_num").lines().map(str::to_owned).collect()
}

fn restore(bed: &Bed, path: &Path) -> Run {
    let _turn = uv_turn();
    let out = bed
        .xtask(&["db-restore", path.to_str().unwrap(), "--yes"])
        .env("HINDSIGHT_ALEMBIC_DIR", alembic_app_dir())
        .output()
        .unwrap();
    Run::from(out)
}

/// The `alembic upgrade` runs the restore logged, in order.
fn upgrades(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter_map(|line| line.split_once("alembic upgrade ")?.1.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn backup(bed: &Bed) -> (PathBuf, Run) {
    let run = bed.run_ok(&["db-backup", "--json"]);
    (PathBuf::from(python_json(&run.stdout, "d['path']")), run)
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn unmerged_heads_and_a_merge_name_verify_and_restore_backups_at_their_own_revisions() {
    let bed = Bed::new("revisions", Flavor::V2);
    bed.start();
    let app = alembic_app_dir();

    // Two branches off the root, not yet merged: two rows, which is legitimate.
    bed.migrate_with(&app, ROOT);
    bed.migrate_with(&app, TAGS);
    bed.migrate_with(&app, RLS);
    assert_eq!(rows(&bed), [TAGS, RLS]);
    bed.psql("INSERT INTO notes (owner, body) SELECT 'user', 'note ' || g FROM generate_series(1, 50) g; INSERT INTO tags SELECT id, 'early' FROM notes;");
    let (unmerged, run) = backup(&bed);
    let heads = format!("{TAGS}+{RLS}");
    assert!(file_name(&unmerged).ends_with(&format!("_{heads}.sql")), "{}", unmerged.display());
    assert!(file_name(&unmerged).starts_with("hindsight_db_backup_"), "{}", unmerged.display());
    assert_eq!(python_json(&run.stdout, "d['revision']"), heads);
    assert!(!run.stderr.contains("unknown"), "no warning: {}", run.stderr);

    // The merge: one row again.
    bed.migrate_with(&app, MERGE);
    assert_eq!(rows(&bed), [MERGE]);
    bed.psql("INSERT INTO notes (owner, body) SELECT 'user', 'late ' || g FROM generate_series(1, 25) g;");
    let (merged, _) = backup(&bed);
    assert!(file_name(&merged).ends_with(&format!("_{MERGE}.sql")), "{}", merged.display());

    // db-list shows the ids, as a person and as a program reads them.
    let list = bed.run_ok(&["db-list"]);
    assert!(list.stdout.contains(&format!("  {heads}  ")), "{}", list.stdout);
    assert!(list.stdout.contains(&format!("  {MERGE}  ")), "{}", list.stdout);
    let list = bed.run_ok(&["db-list", "--json"]);
    assert_eq!(
        python_json(&list.stdout, "[(b['revision'], b['revision_ids']) for b in d['backups']]"),
        format!("[('{MERGE}', ['{MERGE}']), ('{heads}', ['{TAGS}', '{RLS}'])]")
    );

    // db-verify compares every row of the restored alembic_version with the name's set.
    for (path, revision) in [(&unmerged, &heads), (&merged, &MERGE.to_owned())] {
        let run = bed.run_ok(&["db-verify", path.to_str().unwrap(), "--json"]);
        let report = "d['backups'][0]";
        assert_eq!(
            python_json(&run.stdout, &format!("(d['ok'], {report}['revision'], {report}['error'])")),
            format!("(True, '{revision}', None)"),
            "{}",
            run.stderr
        );
    }
    // A name that claims one head of the two is caught.
    let claims_one = unmerged.with_file_name(file_name(&unmerged).replace(&heads, TAGS));
    fs::copy(&unmerged, &claims_one).unwrap();
    fs::copy(format!("{}.sha256", unmerged.display()), format!("{}.sha256", claims_one.display())).unwrap();
    let run = bed.run(&["db-verify", claims_one.to_str().unwrap()]);
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("the file name says revision {TAGS}, the restored alembic_version says {heads}")),
        "{}",
        run.stderr
    );
    fs::remove_file(&claims_one).unwrap();
    fs::remove_file(format!("{}.sha256", claims_one.display())).unwrap();

    // The restore of the unmerged backup migrates to each of its heads, not to `head`
    // (which is the merge now): the branches stay unmerged, as the backup had them.
    let run = restore(&bed, &unmerged);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(upgrades(&run), [TAGS, RLS], "{}", run.stderr);
    assert!(run.last_line().contains(&format!("migrated to {heads}")), "{}", run.last_line());
    assert_eq!(rows(&bed), [TAGS, RLS]);
    assert_eq!(bed.psql("SELECT count(*) FROM notes").trim(), "50");
    assert_eq!(bed.psql("SELECT to_regclass('tags_tag') IS NULL").trim(), "t", "the merge's index is not made");

    // The merged backup: to the merge revision itself.
    let run = restore(&bed, &merged);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(upgrades(&run), [MERGE], "{}", run.stderr);
    assert!(run.last_line().contains(&format!("migrated to {MERGE}")), "{}", run.last_line());
    assert_eq!(rows(&bed), [MERGE]);
    assert_eq!(bed.psql("SELECT count(*) FROM notes").trim(), "75");
    assert_eq!(bed.psql("SELECT to_regclass('tags_tag') IS NOT NULL").trim(), "t");

    // The second restore retired the database the first one replaced (the live one, at
    // the merge): its dump is named by that database's own revision, and lists as such.
    let prerestore = bed.files().into_iter().map(|p| file_name(&p)).find(|f| f.contains("_prerestore_"));
    assert!(prerestore.as_deref().is_some_and(|f| f.ends_with(&format!("_{MERGE}.sql"))), "{prerestore:?}");
    let list = bed.run_ok(&["db-list", "--json"]);
    assert_eq!(
        python_json(&list.stdout, "[b['revision_ids'] for b in d['prerestore_dumps']]"),
        format!("[['{MERGE}']]")
    );
}
