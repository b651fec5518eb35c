//! pg_dump's plain SQL output split, as it streams, into the parts a parallel loader
//! schedules: the header every session replays, one part per TOC entry (pg_dump's
//! `--`/`-- Name: ...; Type: ...`/`--` comment block), the per-object `SET`s between them,
//! each COPY block's data, and the footer from the completion marker on.
//!
//! A push parser: `Splitter::push` takes the SQL in chunks cut anywhere (inside a line,
//! a `\r\n`, a multi-byte character) and reports `Event`s in stream order; every byte of
//! the input is in exactly one event, in order, so the events' bytes put together are the
//! input. Memory stays bounded whatever the dump's size: COPY data passes through as slices
//! of the chunk (only a row's first bytes are held while they could be the `\.` line), and
//! outside COPY data at most one line (`LINE_CAP`) and the few lines that may precede a TOC
//! comment block (`HOLD_CAP`) are held. A longer line passes through unlooked at: pg_dump
//! writes whole function bodies and long statements on one line.
//!
//! Plain dumps carry no dependency lists, so all a part says is its pg_dump `Type:` and
//! the section pg_dump gives that type (`SECTION_PRE_DATA`, `_DATA`, `_POST_DATA` in
//! `pg_dump.c`). A type this table does not know is `Section::Unknown`: the loader runs
//! such a part serially, in dump order, rather than guess.
//!
//! Lines are read as pg_dump writes them, not lexed as SQL: a function body holding a line
//! shaped like a TOC comment block, a per-object `SET` or the completion marker is cut
//! there as pg_dump's would be (only text inside COPY data is never looked at). Such a body
//! can only be written on purpose; a load that cuts it fails (the server's error, or a
//! session stuck inside the statement, which the loader detects) rather than loading it
//! wrong, and `--jobs 1` loads it.

use std::ops::Range;

use crate::store::backup_file::{MARKER, copy_table};

/// The longest line outside COPY data that is looked at. A COPY header is at most about
/// 210 KiB (1600 quoted 63-byte column names) and a TOC comment line far less, so a longer
/// line is statement text and passes through as it comes.
const LINE_CAP: usize = 1024 * 1024;
/// The most held while deciding whether lines (per-object `SET`s, blank lines, a comment
/// block's first lines) start the next TOC entry; more means they do not.
const HOLD_CAP: usize = LINE_CAP;
/// The most of the header kept for `Splitter::header`: pg_dump's is under 1 KiB.
const HEADER_CAP: usize = LINE_CAP;

/// pg_dump's three sections, in the order a restore runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// Types, functions, tables, sequences: what the data goes into.
    PreData,
    /// Table rows, sequence values, large objects' contents.
    Data,
    /// Indexes, constraints, triggers, policies, materialized views' data: what is built on
    /// the data.
    PostData,
    /// A type this splitter does not know: loaded serially, in dump order.
    Unknown,
}

impl Section {
    pub fn name(self) -> &'static str {
        match self {
            Section::PreData => "pre-data",
            Section::Data => "data",
            Section::PostData => "post-data",
            Section::Unknown => "unknown",
        }
    }
}

/// The post-data types a scheduler treats apart from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `CREATE INDEX`: builds in parallel with other indexes.
    Index,
    /// `ALTER INDEX parent ATTACH PARTITION child`: after both indexes exist.
    IndexAttach,
    /// Primary key, unique and exclusion constraints (`CONSTRAINT`): an index build.
    Constraint,
    /// `FK CONSTRAINT`: locks both tables, needs the referenced key.
    FkConstraint,
    Trigger,
    Other,
}

/// One TOC entry, from its comment line `-- [Data for ]Name: N; Type: T; Schema: S;
/// Owner: O[; Tablespace: TS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// pg_dump's `Type:` as written: `TABLE`, `TABLE DATA`, `FK CONSTRAINT`.
    pub desc: String,
    pub kind: Kind,
    /// pg_dump's tag: `child`, `child child_pkey` (table and constraint), `TABLE parent`
    /// (a comment's target), as written (not quoted, line endings replaced by pg_dump).
    pub name: String,
    /// `None` for `-`: objects outside schemas (extensions' comments, large objects).
    pub schema: Option<String>,
    /// `None` in `--no-owner` dumps (`Owner: -`, or no `Owner:` at all).
    pub owner: Option<String>,
    pub tablespace: Option<String>,
    pub section: Section,
}

/// What the stream holds, in order. Bytes belong to the latest part begun: the header
/// until the first `ObjectStart` (or `DataStart`, `Footer`), then the object, its COPY
/// data between `DataStart` and `DataEnd`, the footer after `Footer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The header's bytes: everything before the first TOC comment block (pg_dump's own
    /// comments, `\restrict KEY`, the `SET`s and `set_config` of its fixed output state).
    /// Also whole in `Splitter::header` once it ended. pg_dump 13's `SET
    /// default_tablespace`/`default_table_access_method` just before the first entry are
    /// the header's too: it is replayed in every session anyway.
    Header(&'a [u8]),
    /// A TOC entry begins; its comment block and SQL follow as `Bytes`.
    ObjectStart(Object),
    /// A `SET ...;`, `RESET ...;` or `SELECT pg_catalog.set_config(...);` line that pg_dump
    /// wrote between two entries (`default_tablespace`, `default_table_access_method`,
    /// `search_path`, `SESSION AUTHORIZATION`): in force for every entry after it, so a
    /// session that runs a later entry replays it. Never reported inside the header (that
    /// is replayed whole) nor inside an entry's SQL: only lines followed, through blank
    /// lines and other such lines, by a TOC comment block count.
    Setting(&'a [u8]),
    /// `COPY table (cols) FROM stdin;`: `table` as written there, `copy_line` the line
    /// with its ending. Rows follow as `Bytes` until `DataEnd`. Reported wherever
    /// `SqlScan` sees a COPY block (a line `COPY ... FROM stdin;` outside data), so both
    /// count the same blocks: pg_dump writes them in `TABLE DATA` entries only, and a
    /// loader treats one elsewhere as part of that entry.
    DataStart { table: String, copy_line: &'a [u8] },
    /// The current part's bytes.
    Bytes(&'a [u8]),
    /// The `\.` line that ends a COPY block, with its ending. Bytes after it are the
    /// object's again.
    DataEnd(&'a [u8]),
    /// pg_dump's completion marker block begins; it and what follows (`\unrestrict KEY`)
    /// come as `Bytes`. Lines after it are still read: a marker line that was not the end
    /// (in a function body) is followed by more entries, each its `ObjectStart` as ever.
    Footer,
}

impl Event<'_> {
    /// The input bytes this event carries.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Event::Header(bytes) | Event::Setting(bytes) | Event::Bytes(bytes) | Event::DataEnd(bytes) => bytes,
            Event::DataStart { copy_line, .. } => copy_line,
            Event::ObjectStart(_) | Event::Footer => &[],
        }
    }
}

/// The SQL's bytes by where they load: what a parallel loader can spread, and what it
/// loads serially because the splitter did not know it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub header: u64,
    pub pre_data: u64,
    pub data: u64,
    pub post_data: u64,
    /// Bytes of entries of an unknown type, and of anything between the header and the
    /// first entry that is not one (a COPY there).
    pub unknown: u64,
    pub footer: u64,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.header + self.pre_data + self.data + self.post_data + self.unknown + self.footer
    }

    /// The share of the SQL in `Section::Unknown`, which falls back to the serial path:
    /// 0 for an empty stream.
    pub fn fallback_share(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.unknown as f64 / total as f64,
        }
    }

    fn add(&mut self, place: Place, section: Section, n: usize) {
        let n = n as u64;
        match (place, section) {
            (Place::Header, _) => self.header += n,
            (Place::Footer, _) => self.footer += n,
            (Place::Body, Section::PreData) => self.pre_data += n,
            (Place::Body, Section::Data) => self.data += n,
            (Place::Body, Section::PostData) => self.post_data += n,
            (Place::Body, Section::Unknown) => self.unknown += n,
        }
    }
}

/// Which part of the dump the splitter is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Header,
    /// Entries, and their COPY blocks.
    Body,
    Footer,
}

/// What the held lines may turn out to be.
#[derive(Debug)]
enum Look {
    Nothing,
    /// Per-object settings and blank lines.
    Settings,
    /// A comment block's `--` (and a verbose dump's `-- TOC entry`/`-- Dependencies:` lines).
    Block,
    /// The block's `-- Name:` line: its closing `--` makes it an entry.
    Named(Object),
}

/// The COPY block being passed through.
struct CopyBlock {
    table: String,
    /// At the start of a row: the bytes so far when they may still be the `\.` line.
    row_start: bool,
    marker: Vec<u8>,
}

/// Counts and copies what goes out.
#[derive(Default)]
struct Tally {
    summary: Summary,
    header: Vec<u8>,
    /// The header outgrew `HEADER_CAP`: not pg_dump's, not kept.
    header_dropped: bool,
}

impl Tally {
    /// Sends `event`, header bytes as `Header`, and counts its bytes where they load.
    fn send(&mut self, place: Place, section: Section, out: &mut dyn FnMut(Event<'_>), event: Event<'_>) {
        let event = match (place, event) {
            (_, Event::Bytes(&[]) | Event::Header(&[])) => return,
            (Place::Header, Event::Bytes(bytes)) => Event::Header(bytes),
            (_, event) => event,
        };
        let n = event.bytes().len();
        self.summary.add(place, section, n);
        if let Event::Header(bytes) = event
            && !self.header_dropped
        {
            if self.header.len() + n > HEADER_CAP {
                self.header_dropped = true;
                self.header = Vec::new();
            } else {
                self.header.extend_from_slice(bytes);
            }
        }
        out(event);
    }
}

/// The push parser; see the module's documentation.
pub struct Splitter {
    place: Place,
    /// The section the current part's bytes load in.
    section: Section,
    /// The section of the latest entry, for a comment or ACL that follows it.
    last_section: Section,
    /// The current line outside COPY data, until its end.
    line: Vec<u8>,
    /// The current line outgrew `LINE_CAP`: the rest of it passes through as it comes.
    long: bool,
    /// Complete lines held back, and what each was.
    held: Vec<u8>,
    held_lines: Vec<(Range<usize>, bool)>,
    /// Where in `held` the comment block starts.
    block_at: usize,
    look: Look,
    copy: Option<CopyBlock>,
    tally: Tally,
}

impl Default for Splitter {
    fn default() -> Splitter {
        Splitter::new()
    }
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter {
            place: Place::Header,
            section: Section::Unknown,
            // pg_dump starts a restore in pre-data: a comment before any entry is on a
            // pre-data object (an extension's, a schema's).
            last_section: Section::PreData,
            line: Vec::new(),
            long: false,
            held: Vec::new(),
            held_lines: Vec::new(),
            block_at: 0,
            look: Look::Nothing,
            copy: None,
            tally: Tally::default(),
        }
    }

    /// Takes the next bytes of the SQL, cut anywhere, and reports what they hold.
    pub fn push(&mut self, chunk: &[u8], out: &mut impl FnMut(Event<'_>)) {
        let out: &mut dyn FnMut(Event<'_>) = out;
        let mut at = 0;
        while at < chunk.len() {
            let rest = &chunk[at..];
            at += if self.copy.is_some() { self.copy_data(rest, out) } else { self.text(rest, out) };
        }
    }

    /// The end of the SQL: what was held goes out. A last line without its newline is
    /// judged as it is; a `\.` without one ends its COPY block, as in psql.
    pub fn finish(&mut self, out: &mut impl FnMut(Event<'_>)) {
        let out: &mut dyn FnMut(Event<'_>) = out;
        if let Some(copy) = &mut self.copy {
            let marker = std::mem::take(&mut copy.marker);
            if marker == b"\\." {
                self.copy = None;
                self.send(out, Event::DataEnd(&marker));
            } else {
                self.send(out, Event::Bytes(&marker));
            }
        }
        if !self.line.is_empty() && !self.long {
            let line = std::mem::take(&mut self.line);
            self.complete(&line, out);
        }
        self.line.clear();
        self.flush_held(out);
        if self.place == Place::Header {
            // A header with nothing after it is still whole.
            self.place = Place::Body;
        }
    }

    /// The header's bytes, as written (with pg_dump's own `\restrict` line, which a loader
    /// under its own `\restrict` takes out, as `SqlScan` does), once the header has ended;
    /// `None` before that, or when it is longer than any pg_dump writes.
    pub fn header(&self) -> Option<&[u8]> {
        (self.place != Place::Header && !self.tally.header_dropped).then_some(&self.tally.header)
    }

    /// The table whose COPY data the SQL ended in, if it did (a truncated file).
    pub fn open_copy(&self) -> Option<&str> {
        self.copy.as_ref().map(|copy| copy.table.as_str())
    }

    /// Bytes so far by section; see `Summary`.
    pub fn summary(&self) -> Summary {
        self.tally.summary
    }

    fn send(&mut self, out: &mut dyn FnMut(Event<'_>), event: Event<'_>) {
        self.tally.send(self.place, self.section, out, event);
    }

    /// COPY rows, passed through as slices of the chunk. psql ends the block at a line
    /// that is exactly `\.`, with `\n` or `\r\n`; a `\.` in a value is written `\\.`, which
    /// is no such line. Only a row start that the chunk cuts while it could still be that
    /// line is held (at most 3 bytes), so rows starting with `\N` cost nothing.
    fn copy_data(&mut self, rest: &[u8], out: &mut dyn FnMut(Event<'_>)) -> usize {
        let Some(copy) = &mut self.copy else { return 0 };
        let mut at = 0;
        while at < rest.len() {
            if !copy.row_start {
                // memchr: nearly every byte of a dump is here, in long runs of rows.
                match memchr::memchr(b'\n', &rest[at..]) {
                    Some(i) => {
                        at += i + 1;
                        copy.row_start = true;
                    }
                    None => at = rest.len(),
                }
                continue;
            }
            if copy.marker.is_empty() && rest[at] != b'\\' {
                copy.row_start = false;
                continue;
            }
            // The row so far: held bytes (from earlier chunks) and what this chunk has.
            let mut start = std::mem::take(&mut copy.marker);
            let had = start.len();
            start.extend_from_slice(&rest[at..rest.len().min(at + 4 - had)]);
            match end_of_copy(&start) {
                Some(true) => {
                    // `\.` and its ending: the block ends here.
                    self.tally.send(self.place, self.section, out, Event::Bytes(&rest[..at]));
                    let len = if start.starts_with(b"\\.\n") { 3 } else { 4 };
                    at += len - had;
                    self.copy = None;
                    self.send(out, Event::DataEnd(&start[..len]));
                    return at;
                }
                Some(false) => {
                    // The chunk ends inside what may be the `\.` line: hold it.
                    self.tally.send(self.place, self.section, out, Event::Bytes(&rest[..at]));
                    copy.marker = start;
                    return rest.len();
                }
                None => {
                    // A row. What an earlier chunk left held goes out first.
                    self.tally.send(self.place, self.section, out, Event::Bytes(&start[..had]));
                    copy.row_start = false;
                }
            }
        }
        self.tally.send(self.place, self.section, out, Event::Bytes(&rest[..at]));
        at
    }

    /// Text outside COPY data, assembled into lines.
    fn text(&mut self, rest: &[u8], out: &mut dyn FnMut(Event<'_>)) -> usize {
        let end = memchr::memchr(b'\n', rest);
        let segment = &rest[..end.map_or(rest.len(), |i| i + 1)];
        if self.long {
            self.send(out, Event::Bytes(segment));
            self.long = end.is_none();
            return segment.len();
        }
        if self.line.len() + segment.len() > LINE_CAP {
            // Statement text (a function body on one line): not a line this splitter
            // reads, so nothing held before it can start an entry either.
            self.flush_held(out);
            let line = std::mem::take(&mut self.line);
            self.send(out, Event::Bytes(&line));
            self.line = line;
            self.line.clear();
            self.send(out, Event::Bytes(segment));
            self.long = end.is_none();
            return segment.len();
        }
        if end.is_none() {
            self.line.extend_from_slice(segment);
        } else if self.line.is_empty() {
            self.complete(segment, out);
        } else {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(segment);
            self.complete(&line, out);
            line.clear();
            self.line = line;
        }
        segment.len()
    }

    /// One whole line outside COPY data (with its ending, if it has one).
    fn complete(&mut self, line: &[u8], out: &mut dyn FnMut(Event<'_>)) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if self.held.len() + line.len() > HOLD_CAP {
            self.flush_held(out);
        }
        let dash = text == b"--";
        match std::mem::replace(&mut self.look, Look::Nothing) {
            Look::Nothing => {}
            Look::Settings if text.is_empty() || is_setting(text) => {
                return self.hold(line, Look::Settings, is_setting(text));
            }
            Look::Settings if dash => {
                self.block_at = self.held.len();
                return self.hold(line, Look::Block, false);
            }
            Look::Block if text.starts_with(b"-- TOC entry ") || text.starts_with(b"-- Dependencies:") => {
                return self.hold(line, Look::Block, false);
            }
            Look::Block if text == MARKER => return self.footer(line, out),
            Look::Block => {
                if let Some(object) = parse_toc(text, self.last_section) {
                    return self.hold(line, Look::Named(object), false);
                }
            }
            Look::Named(object) if dash => return self.object(object, line, out),
            Look::Settings | Look::Named(_) => {}
        }
        // Not (or no longer) the lines before an entry: what was held is plain SQL.
        self.flush_held(out);
        if dash {
            self.block_at = 0;
            self.hold(line, Look::Block, false);
        } else if text == MARKER {
            // The marker without pg_dump's `--` before it: still where `ends_complete` and
            // the loader see the dump's end.
            self.footer(line, out);
        } else if self.place != Place::Header && is_setting(text) {
            self.hold(line, Look::Settings, true);
        } else if text.starts_with(b"COPY ") && text.ends_with(b" FROM stdin;") {
            // The same rule as `SqlScan`, so both see the same blocks.
            let header = text.strip_suffix(b" FROM stdin;").unwrap_or(text);
            let table = copy_table(&header[b"COPY ".len()..]);
            if self.place == Place::Header {
                // A COPY before any entry: not pg_dump's layout.
                (self.place, self.section) = (Place::Body, Section::Unknown);
            }
            self.send(out, Event::DataStart { table: table.clone(), copy_line: line });
            self.copy = Some(CopyBlock { table, row_start: true, marker: Vec::new() });
        } else {
            self.send(out, Event::Bytes(line));
        }
    }

    fn hold(&mut self, line: &[u8], look: Look, setting: bool) {
        let start = self.held.len();
        self.held.extend_from_slice(line);
        self.held_lines.push((start..self.held.len(), setting));
        self.look = look;
    }

    /// What was held is part of the current part after all.
    fn flush_held(&mut self, out: &mut dyn FnMut(Event<'_>)) {
        let held = std::mem::take(&mut self.held);
        self.send(out, Event::Bytes(&held));
        self.held = held;
        self.held.clear();
        self.held_lines.clear();
        self.look = Look::Nothing;
    }

    /// The held lines before the block as settings (outside the header) and blank lines,
    /// in order; the block's own lines stay held.
    fn send_settings(&mut self, out: &mut dyn FnMut(Event<'_>)) {
        for (range, setting) in &self.held_lines {
            if range.start >= self.block_at {
                break;
            }
            let bytes = &self.held[range.clone()];
            let event =
                if *setting && self.place != Place::Header { Event::Setting(bytes) } else { Event::Bytes(bytes) };
            self.tally.send(self.place, self.section, out, event);
        }
    }

    /// The closing `--` of an entry's comment block: the entry begins with the block.
    fn object(&mut self, object: Object, line: &[u8], out: &mut dyn FnMut(Event<'_>)) {
        self.send_settings(out);
        self.place = Place::Body;
        self.section = object.section;
        self.last_section = object.section;
        self.send(out, Event::ObjectStart(object));
        self.send_block(line, out);
    }

    /// The completion marker: the footer begins with its block.
    fn footer(&mut self, line: &[u8], out: &mut dyn FnMut(Event<'_>)) {
        self.send_settings(out);
        self.place = Place::Footer;
        self.send(out, Event::Footer);
        self.send_block(line, out);
    }

    fn send_block(&mut self, line: &[u8], out: &mut dyn FnMut(Event<'_>)) {
        let held = std::mem::take(&mut self.held);
        self.send(out, Event::Bytes(&held[self.block_at.min(held.len())..]));
        self.send(out, Event::Bytes(line));
        self.held = held;
        self.held.clear();
        self.held_lines.clear();
        self.block_at = 0;
    }
}

/// The per-object settings in force, for a session that runs the next entry: the latest
/// line for each setting, in the order they first appeared. `RESET x` replaces `SET x`,
/// and `RESET SESSION AUTHORIZATION` replaces `SET SESSION AUTHORIZATION`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    lines: Vec<(String, Vec<u8>)>,
}

impl Settings {
    /// Takes in an `Event::Setting`'s line.
    pub fn apply(&mut self, line: &[u8]) {
        let name = setting_name(line);
        match self.lines.iter_mut().find(|(had, _)| *had == name) {
            Some((_, had)) => *had = line.to_vec(),
            None => self.lines.push((name, line.to_vec())),
        }
    }

    /// The lines that give a new session the settings in force, each with its ending.
    pub fn replay(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(|(_, line)| line.as_slice())
    }
}

/// What a setting line sets: `default_tablespace` for `SET default_tablespace = '';`,
/// `search_path` for `SELECT pg_catalog.set_config('search_path', '', false);`, `session
/// authorization` for both `SET` and `RESET SESSION AUTHORIZATION`. Lowercase: SQL's
/// names are not case-sensitive unquoted.
fn setting_name(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line).trim_end().to_ascii_lowercase();
    if let Some(args) = text.strip_prefix("select pg_catalog.set_config(") {
        return args.split(',').next().unwrap_or("").trim().trim_matches('\'').to_owned();
    }
    let rest = text.strip_prefix("set ").or_else(|| text.strip_prefix("reset ")).unwrap_or(&text);
    let rest = rest.trim_end_matches(';').trim();
    let rest = rest.strip_prefix("session ").map_or(rest, str::trim_start);
    if rest.starts_with("authorization") {
        return "session authorization".to_owned();
    }
    rest.split([' ', '=']).next().unwrap_or("").to_owned()
}

/// A line pg_dump writes between entries to set the next one's context
/// (`_selectOutputSchema`, `_selectTablespace`, `_selectTableAccessMethod`, `_becomeUser`
/// in `pg_backup_archiver.c`): one statement on one line.
fn is_setting(text: &[u8]) -> bool {
    (text.starts_with(b"SET ") || text.starts_with(b"RESET ") || text.starts_with(b"SELECT pg_catalog.set_config("))
        && text.ends_with(b";")
}

/// A TOC comment line: `-- [Data for |Statistics for ]Name: N; Type: T; Schema: S;
/// Owner: O[; Tablespace: TS]` (`_printTocEntry`). Names are written as they are, so they
/// may hold `; `: the type is found from the right (the last `; Type: ` followed by
/// capitals and spaces and `; Schema: `), the owner and tablespace from the right of
/// what follows. `previous` is the section a comment, ACL or security label inherits.
fn parse_toc(text: &[u8], previous: Section) -> Option<Object> {
    let text = std::str::from_utf8(text).ok()?;
    let rest = text.strip_prefix("-- ")?;
    let rest = ["Name: ", "Data for Name: ", "Statistics for Name: "].iter().find_map(|p| rest.strip_prefix(p))?;
    let (name, desc, after) = rest.rmatch_indices("; Type: ").find_map(|(at, key)| {
        let after = &rest[at + key.len()..];
        let (desc, after) = after.split_once("; Schema: ")?;
        let shaped = !desc.is_empty() && desc.bytes().all(|b| b.is_ascii_uppercase() || b == b' ');
        shaped.then_some((&rest[..at], desc, after))
    })?;
    let (schema, owner) = match after.rsplit_once("; Owner: ") {
        Some((schema, owner)) => (schema, Some(owner)),
        None => (after, None),
    };
    // The tablespace follows the owner, or the schema when there is no owner.
    let (schema, owner, tablespace) = match owner {
        Some(owner) => match owner.rsplit_once("; Tablespace: ") {
            Some((owner, tablespace)) => (schema, Some(owner), Some(tablespace)),
            None => (schema, Some(owner), None),
        },
        None => match schema.rsplit_once("; Tablespace: ") {
            Some((schema, tablespace)) => (schema, None, Some(tablespace)),
            None => (schema, None, None),
        },
    };
    let given = |value: &str| (!value.is_empty() && value != "-").then(|| value.to_owned());
    Some(Object {
        desc: desc.to_owned(),
        kind: kind_of(desc),
        name: name.to_owned(),
        schema: given(schema),
        owner: owner.and_then(given),
        tablespace: tablespace.and_then(given),
        section: section_of(desc, previous),
    })
}

/// The section pg_dump's `ArchiveEntry` calls give each type. `COMMENT`, `ACL` and
/// `SECURITY LABEL` are `SECTION_NONE` there: they go with the object they are on, which
/// pg_dump writes just before them (ACLs in a pass of their own after everything but
/// materialized views' data and event triggers), so they take the section of the entry
/// before them. Large objects: `BLOB` (lo_create, before 17) is pre-data, `BLOB METADATA`
/// (17 on), `BLOBS` and its contents are data.
fn section_of(desc: &str, previous: Section) -> Section {
    match desc {
        "COMMENT" | "ACL" | "SECURITY LABEL" => previous,
        "ACCESS METHOD"
        | "AGGREGATE"
        | "BLOB"
        | "CAST"
        | "COLLATION"
        | "CONVERSION"
        | "DATABASE"
        | "DATABASE PROPERTIES"
        | "DEFAULT"
        | "DOMAIN"
        | "EXTENSION"
        | "FOREIGN DATA WRAPPER"
        | "FOREIGN TABLE"
        | "FUNCTION"
        | "MATERIALIZED VIEW"
        | "OPERATOR"
        | "OPERATOR CLASS"
        | "OPERATOR FAMILY"
        | "PROCEDURAL LANGUAGE"
        | "PROCEDURE"
        | "SCHEMA"
        | "SEQUENCE"
        | "SEQUENCE OWNED BY"
        | "SERVER"
        | "SHELL TYPE"
        | "TABLE"
        | "TABLE ATTACH"
        | "TEXT SEARCH CONFIGURATION"
        | "TEXT SEARCH DICTIONARY"
        | "TEXT SEARCH PARSER"
        | "TEXT SEARCH TEMPLATE"
        | "TRANSFORM"
        | "TYPE"
        | "USER MAPPING"
        | "VIEW" => Section::PreData,
        "TABLE DATA" | "SEQUENCE SET" | "BLOB METADATA" | "BLOBS" | "LARGE OBJECT" | "LARGE OBJECTS" => Section::Data,
        "CHECK CONSTRAINT"
        | "CONSTRAINT"
        | "DEFAULT ACL"
        | "EVENT TRIGGER"
        | "FK CONSTRAINT"
        | "INDEX"
        | "INDEX ATTACH"
        | "MATERIALIZED VIEW DATA"
        | "POLICY"
        | "PUBLICATION"
        | "PUBLICATION TABLE"
        | "PUBLICATION TABLES IN SCHEMA"
        | "ROW SECURITY"
        | "RULE"
        | "STATISTICS"
        | "SUBSCRIPTION"
        | "SUBSCRIPTION TABLE"
        | "TRIGGER" => Section::PostData,
        _ => Section::Unknown,
    }
}

/// Whether a row's first bytes are psql's end of COPY data: `Some(true)` when they start
/// with `\.\n` or `\.\r\n`, `Some(false)` when they are too few to tell, `None` when not.
fn end_of_copy(start: &[u8]) -> Option<bool> {
    [&b"\\.\n"[..], b"\\.\r\n"]
        .iter()
        .find_map(|end| if start.starts_with(end) { Some(true) } else { end.starts_with(start).then_some(false) })
}

fn kind_of(desc: &str) -> Kind {
    match desc {
        "INDEX" => Kind::Index,
        "INDEX ATTACH" => Kind::IndexAttach,
        "CONSTRAINT" => Kind::Constraint,
        "FK CONSTRAINT" => Kind::FkConstraint,
        "TRIGGER" => Kind::Trigger,
        _ => Kind::Other,
    }
}

/// Whether a header holds nothing but what pg_dump writes there: comments, blank lines
/// and settings (`SET`, `set_config`). Every session of a parallel load replays it, so a
/// statement that must run once (a `--clean` dump's `DROP`s) makes the load serial.
pub fn settings_only(header: &[u8]) -> bool {
    header.split(|&b| b == b'\n').all(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.is_empty() || line.starts_with(b"--") || is_setting(line)
    })
}

/// The table an index or key build is on, from its SQL as pg_dump writes it
/// (`CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING ...`, or `ALTER TABLE [ONLY]
/// schema.table` with `ADD CONSTRAINT` on the next line), as (schema, table) unquoted.
/// `None` when the entry holds no such line: the loader then keeps the build in order.
pub fn table_of(sql: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(sql).ok()?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
            let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
            return qualified(rest).filter(|(_, after)| after.is_empty()).map(|(table, _)| table);
        }
        if let Some(rest) = line.strip_prefix("CREATE UNIQUE INDEX ").or_else(|| line.strip_prefix("CREATE INDEX ")) {
            let (_, after) = identifier(rest)?;
            let after = after.strip_prefix(" ON ")?;
            let after = after.strip_prefix("ONLY ").unwrap_or(after);
            return qualified(after).filter(|(_, after)| after.starts_with(" USING ")).map(|(table, _)| table);
        }
    }
    None
}

/// A table's name as pg_dump writes it (`public.t`, `"My S"."T"`), as (schema, name).
pub fn qualified_name(text: &str) -> Option<(String, String)> {
    qualified(text).filter(|(_, rest)| rest.is_empty()).map(|(name, _)| name)
}

/// `schema.name` at the start of `text`, each part as `identifier` reads it, and the rest.
fn qualified(text: &str) -> Option<((String, String), &str)> {
    let (schema, rest) = identifier(text)?;
    let (name, rest) = identifier(rest.strip_prefix('.')?)?;
    Some(((schema, name), rest))
}

/// An identifier as pg_dump's `fmtId` writes it: in double quotes (`""` for one) unless
/// it is plain lowercase, digits and `_`; unquoted, and the rest of `text`.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut rest = quoted;
        loop {
            let at = rest.find('"')?;
            name.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            match rest.strip_prefix('"') {
                Some(after) => {
                    name.push('"');
                    rest = after;
                }
                None => return Some((name, rest)),
            }
        }
    }
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_owned(), &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &[u8] = include_bytes!("../../tests/fixtures/dumps/pg15_objects.sql");
    const PG13: &[u8] = include_bytes!("../../tests/fixtures/dumps/pg13_no_restrict.sql");
    const NO_OWNER: &[u8] = include_bytes!("../../tests/fixtures/dumps/pg15_no_owner.sql");

    /// An event that outlives its chunk.
    #[derive(Debug, Clone, PartialEq)]
    enum Owned {
        Header(Vec<u8>),
        Object(Object),
        Setting(Vec<u8>),
        DataStart(String, Vec<u8>),
        Bytes(Vec<u8>),
        DataEnd(Vec<u8>),
        Footer,
    }

    /// Splits `input` fed in chunks of `size`: the events, with neighbouring header and
    /// body bytes merged (chunking cuts them anywhere), and the splitter.
    fn split(input: &[u8], size: usize) -> (Vec<Owned>, Splitter) {
        let mut splitter = Splitter::new();
        let mut events: Vec<Owned> = Vec::new();
        let mut take = |event: Event<'_>| {
            let owned = match event {
                Event::Header(bytes) => Owned::Header(bytes.to_vec()),
                Event::ObjectStart(object) => Owned::Object(object),
                Event::Setting(bytes) => Owned::Setting(bytes.to_vec()),
                Event::DataStart { table, copy_line } => Owned::DataStart(table, copy_line.to_vec()),
                Event::Bytes(bytes) => Owned::Bytes(bytes.to_vec()),
                Event::DataEnd(bytes) => Owned::DataEnd(bytes.to_vec()),
                Event::Footer => Owned::Footer,
            };
            match (events.last_mut(), owned) {
                (Some(Owned::Header(had)), Owned::Header(more)) | (Some(Owned::Bytes(had)), Owned::Bytes(more)) => {
                    assert!(!more.is_empty(), "no empty events");
                    had.extend(more)
                }
                (_, owned) => events.push(owned),
            }
        };
        for chunk in input.chunks(size) {
            splitter.push(chunk, &mut take);
        }
        splitter.finish(&mut take);
        (events, splitter)
    }

    fn concat(events: &[Owned]) -> Vec<u8> {
        let mut all = Vec::new();
        for event in events {
            match event {
                Owned::Header(b) | Owned::Setting(b) | Owned::DataStart(_, b) | Owned::Bytes(b) | Owned::DataEnd(b) => {
                    all.extend_from_slice(b)
                }
                Owned::Object(_) | Owned::Footer => {}
            }
        }
        all
    }

    /// The events that structure the stream, one a line, bytes left out.
    fn outline(events: &[Owned]) -> Vec<String> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_owned();
        events
            .iter()
            .filter_map(|event| match event {
                Owned::Object(o) => Some(format!(
                    "{}|{}|{}|{}|{}|{:?}",
                    o.desc,
                    o.name,
                    o.schema.as_deref().unwrap_or("-"),
                    o.owner.as_deref().unwrap_or("-"),
                    o.section.name(),
                    o.kind
                )),
                Owned::Setting(b) => Some(format!("setting {}", text(b))),
                Owned::DataStart(table, _) => Some(format!("copy {table}")),
                Owned::DataEnd(_) => Some("end".to_owned()),
                Owned::Footer => Some("footer".to_owned()),
                Owned::Header(_) | Owned::Bytes(_) => None,
            })
            .collect()
    }

    /// The bytes between `DataStart` and `DataEnd`, per block.
    fn data(events: &[Owned]) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut open: Option<Vec<u8>> = None;
        for event in events {
            match event {
                Owned::DataStart(..) => open = Some(Vec::new()),
                Owned::Bytes(b) => open.iter_mut().for_each(|rows| rows.extend_from_slice(b)),
                Owned::DataEnd(_) => blocks.extend(open.take().map(|rows| String::from_utf8(rows).unwrap())),
                _ => {}
            }
        }
        blocks
    }

    fn crlf(input: &[u8]) -> Vec<u8> {
        String::from_utf8(input.to_vec()).unwrap().replace('\n', "\r\n").into_bytes()
    }

    #[test]
    fn a_pg15_dump_splits_into_its_entries_and_sections() {
        let (events, splitter) = split(PG15, PG15.len());
        let want = [
            "FUNCTION|touch()|public|user|pre-data|Other",
            "setting SET default_tablespace = '';",
            "setting SET default_table_access_method = heap;",
            "TABLE|child|public|user|pre-data|Other",
            "SEQUENCE|child_id_seq|public|user|pre-data|Other",
            "SEQUENCE OWNED BY|child_id_seq|public|user|pre-data|Other",
            "TABLE|events|public|user|pre-data|Other",
            "TABLE|events_2026|public|user|pre-data|Other",
            "TABLE|parent|public|user|pre-data|Other",
            "COMMENT|TABLE parent|public|user|pre-data|Other",
            "VIEW|v|public|user|pre-data|Other",
            "TABLE ATTACH|events_2026|public|user|pre-data|Other",
            "DEFAULT|child id|public|user|pre-data|Other",
            "TABLE DATA|child|public|user|data|Other",
            "copy public.child",
            "end",
            "TABLE DATA|events_2026|public|user|data|Other",
            "copy public.events_2026",
            "end",
            "TABLE DATA|parent|public|user|data|Other",
            "copy public.parent",
            "end",
            "SEQUENCE SET|child_id_seq|public|user|data|Other",
            "CONSTRAINT|child child_pkey|public|user|post-data|Constraint",
            "CONSTRAINT|events events_pkey|public|user|post-data|Constraint",
            "CONSTRAINT|events_2026 events_2026_pkey|public|user|post-data|Constraint",
            "CONSTRAINT|parent parent_name_key|public|user|post-data|Constraint",
            "CONSTRAINT|parent parent_pkey|public|user|post-data|Constraint",
            "INDEX|child_body|public|user|post-data|Index",
            "INDEX|events_at|public|user|post-data|Index",
            "INDEX|events_2026_at_idx|public|user|post-data|Index",
            "INDEX ATTACH|events_2026_at_idx|public|user|post-data|IndexAttach",
            "INDEX ATTACH|events_2026_pkey|public|user|post-data|IndexAttach",
            "TRIGGER|child child_touch|public|user|post-data|Trigger",
            "FK CONSTRAINT|child child_parent_id_fkey|public|user|post-data|FkConstraint",
            "ROW SECURITY|child|public|user|post-data|Other",
            "POLICY|child p1|public|user|post-data|Other",
            "footer",
        ];
        assert_eq!(outline(&events), want);
        assert_eq!(concat(&events), PG15, "every byte, once, in order");

        // The header: up to the first entry's comment block, `\restrict` and all.
        let first = PG15.windows(19).position(|w| w == b"--\n-- Name: touch()").unwrap();
        assert_eq!(splitter.header(), Some(&PG15[..first]));
        assert_eq!(events[0], Owned::Header(PG15[..first].to_vec()));
        let header = String::from_utf8_lossy(splitter.header().unwrap());
        assert!(header.contains("\\restrict ") && header.trim_end().ends_with("SET row_security = off;"));

        // An entry's bytes start with its comment block and end before the next one's
        // settings; COPY blocks hold the rows only.
        let Owned::Bytes(function) = &events[2] else { panic!("{:?}", events[2]) };
        let function = String::from_utf8_lossy(function);
        assert!(function.starts_with("--\n-- Name: touch(); Type: FUNCTION;"), "{function}");
        assert!(function.ends_with("ALTER FUNCTION public.touch() OWNER TO \"user\";\n\n"), "{function}");
        assert_eq!(data(&events), ["1\t1\tx\n2\t2\tx\n", "1\t2026-05-01\tn\n", "1\ta\n2\tb\n"]);
        let copy_line = events.iter().find_map(|e| match e {
            Owned::DataStart(_, line) => Some(line.clone()),
            _ => None,
        });
        assert_eq!(copy_line.as_deref(), Some(&b"COPY public.child (id, parent_id, body) FROM stdin;\n"[..]));
        let footer = events.iter().position(|e| *e == Owned::Footer).unwrap();
        let Owned::Bytes(tail) = &events[footer + 1] else { panic!() };
        assert!(tail.starts_with(b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict "));
        assert_eq!(splitter.open_copy(), None);

        let summary = splitter.summary();
        assert_eq!(summary.total(), PG15.len() as u64);
        assert_eq!(summary.header, first as u64);
        assert!(summary.pre_data > 0 && summary.data > 0 && summary.post_data > 0 && summary.footer > 0);
        assert_eq!((summary.unknown, summary.fallback_share()), (0, 0.0));
    }

    #[test]
    fn any_chunking_gives_the_same_events_and_every_byte() {
        let dumps = [PG15.to_vec(), PG13.to_vec(), NO_OWNER.to_vec(), crlf(PG15)];
        for dump in &dumps {
            let (whole, splitter) = split(dump, dump.len());
            for size in [1, 2, 3, 7, 4096] {
                let (events, chunked) = split(dump, size);
                assert_eq!(events, whole, "chunks of {size}");
                assert_eq!(concat(&events), *dump, "chunks of {size}");
                assert_eq!(chunked.summary(), splitter.summary());
                assert_eq!(chunked.header(), splitter.header());
            }
        }
    }

    #[test]
    fn crlf_line_endings_split_alike() {
        let dump = crlf(PG15);
        let (events, splitter) = split(&dump, 7);
        assert_eq!(outline(&events), outline(&split(PG15, 7).0));
        assert!(events.iter().any(|e| *e == Owned::DataEnd(b"\\.\r\n".to_vec())));
        assert_eq!(data(&events)[2], "1\ta\r\n2\tb\r\n");
        assert!(splitter.header().unwrap().ends_with(b"SET row_security = off;\r\n\r\n"));
    }

    #[test]
    fn a_pg13_dump_without_restrict() {
        let (events, splitter) = split(PG13, 7);
        let want = [
            "TABLE|notes|public|app|pre-data|Other",
            "SEQUENCE|notes_id_seq|public|app|pre-data|Other",
            "SEQUENCE OWNED BY|notes_id_seq|public|app|pre-data|Other",
            "DEFAULT|notes id|public|app|pre-data|Other",
            "TABLE DATA|notes|public|app|data|Other",
            "copy public.notes",
            "end",
            "SEQUENCE SET|notes_id_seq|public|app|data|Other",
            "CONSTRAINT|notes notes_pkey|public|app|post-data|Constraint",
            "INDEX|notes_body|public|app|post-data|Index",
            "ACL|TABLE notes|public|app|post-data|Other",
            "footer",
        ];
        assert_eq!(outline(&events), want);
        // The settings pg_dump writes before the first entry are the header's: it is
        // replayed in every session anyway.
        let header = String::from_utf8_lossy(splitter.header().unwrap()).into_owned();
        assert!(!header.contains("\\restrict"));
        assert!(header.ends_with("SET default_table_access_method = heap;\n\n"), "{header}");
        // A row shaped like a TOC comment line is a row.
        assert_eq!(data(&events), ["1\tfirst\n2\t-- Name: x; Type: TABLE; Schema: public; Owner: app\n"]);
        assert_eq!(concat(&events), PG13);
    }

    #[test]
    fn a_no_owner_dump() {
        let (events, _) = split(NO_OWNER, 4096);
        let want = [
            "SCHEMA|app|-|-|pre-data|Other",
            "TYPE|mood|app|-|pre-data|Other",
            "setting SET default_tablespace = '';",
            "setting SET default_table_access_method = heap;",
            "TABLE|entries|app|-|pre-data|Other",
            "COMMENT|COLUMN entries.\"note; Type: x\"|app|-|pre-data|Other",
            "TABLE DATA|entries|app|-|data|Other",
            "copy app.entries",
            "end",
            "CONSTRAINT|entries entries_pkey|app|-|post-data|Constraint",
            "footer",
        ];
        assert_eq!(outline(&events), want);
        assert_eq!(data(&events), ["1\tok\t\\\\.\n2\tmeh\ta\\\\.b\n"]);
    }

    #[test]
    fn toc_lines_are_read_from_the_right() {
        let parse = |line: &str| parse_toc(line.as_bytes(), Section::PostData).unwrap();
        let odd =
            parse("-- Name: a; Type: TABLE; Schema: b; Type: FUNCTION; Schema: s;x; Owner: o; p; Tablespace: t; u");
        assert_eq!(
            (odd.name.as_str(), odd.desc.as_str(), odd.schema.as_deref(), odd.owner.as_deref()),
            ("a; Type: TABLE; Schema: b", "FUNCTION", Some("s;x"), Some("o; p"))
        );
        assert_eq!(odd.tablespace.as_deref(), Some("t; u"));
        // `--no-owner`: `Owner: -`, or, as some writers do, no `Owner:` at all.
        let none = parse("-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -");
        assert_eq!((none.owner, none.section), (None, Section::Data));
        let absent = parse("-- Name: t_pkey; Type: CONSTRAINT; Schema: public; Tablespace: fast");
        assert_eq!((absent.owner, absent.tablespace.as_deref()), (None, Some("fast")));
        assert_eq!((absent.schema.as_deref(), absent.kind), (Some("public"), Kind::Constraint));
        let empty = parse("-- Name: x; Type: INDEX; Schema: public; Owner: ");
        assert_eq!(empty.owner, None);
        for not in [
            "-- Name: x",
            "-- Name: x; Type: table; Schema: public; Owner: o",
            "--Name: x; Type: TABLE; Schema: public; Owner: o",
            "-- PostgreSQL database dump complete",
            "-- Dumped by pg_dump version 15.18",
        ] {
            assert_eq!(parse_toc(not.as_bytes(), Section::PreData), None, "{not}");
        }
        // Comments, ACLs and security labels go with the entry before them; an unknown
        // type is unknown, and so is what goes with it.
        for (desc, previous, want) in [
            ("COMMENT", Section::PostData, Section::PostData),
            ("ACL", Section::PreData, Section::PreData),
            ("SECURITY LABEL", Section::Unknown, Section::Unknown),
            ("MATERIALIZED VIEW DATA", Section::PreData, Section::PostData),
            ("BLOBS", Section::PreData, Section::Data),
            ("BLOB", Section::PreData, Section::PreData),
            ("SOMETHING NEW", Section::PreData, Section::Unknown),
        ] {
            assert_eq!(section_of(desc, previous), want, "{desc}");
        }
    }

    /// A hand-written body: entries that are not pg15_objects' own, in the shape pg_dump
    /// writes them.
    fn dump(body: &str) -> String {
        format!(
            "--\n-- PostgreSQL database dump\n--\n\nSET client_encoding = 'UTF8';\n\n{body}\
             --\n-- PostgreSQL database dump complete\n--\n\n"
        )
    }

    #[test]
    fn data_entries_without_copy_stay_entries_of_their_kind() {
        let dump = dump(
            "--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: u\n--\n\n\
             INSERT INTO public.t VALUES (1, 'x');\n\n\n\
             --\n-- Name: 16390; Type: BLOB; Schema: -; Owner: u\n--\n\n\
             SELECT pg_catalog.lo_create('16390');\n\n\n\
             --\n-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -\n--\n\n\
             BEGIN;\n\nSELECT pg_catalog.lo_open('16390', 131072);\n\
             SELECT pg_catalog.lowrite(0, '\\x6869');\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n\n\
             --\n-- Name: LARGE OBJECT 16390; Type: COMMENT; Schema: -; Owner: u\n--\n\n\
             COMMENT ON LARGE OBJECT 16390 IS 'hi';\n\n\n\
             --\n-- Name: t_sum; Type: STATISTICS DATA; Schema: public; Owner: -\n--\n\n\
             SELECT 1;\n\n\n\
             --\n-- Name: TABLE t; Type: COMMENT; Schema: public; Owner: u\n--\n\n\
             COMMENT ON TABLE public.t IS 'x';\n\n\n",
        );
        let (events, splitter) = split(dump.as_bytes(), 5);
        let want = [
            "TABLE DATA|t|public|u|data|Other",
            "BLOB|16390|-|u|pre-data|Other",
            "BLOBS|BLOBS|-|-|data|Other",
            "COMMENT|LARGE OBJECT 16390|-|u|data|Other",
            "STATISTICS DATA|t_sum|public|-|unknown|Other",
            "COMMENT|TABLE t|public|u|unknown|Other",
            "footer",
        ];
        assert_eq!(outline(&events), want);
        assert_eq!(concat(&events), dump.as_bytes());
        let summary = splitter.summary();
        let unknown = "--\n-- Name: t_sum; Type: STATISTICS DATA; Schema: public; Owner: -\n--\n\nSELECT 1;\n\n\n\
                       --\n-- Name: TABLE t; Type: COMMENT; Schema: public; Owner: u\n--\n\n\
                       COMMENT ON TABLE public.t IS 'x';\n\n\n";
        assert_eq!(summary.unknown, unknown.len() as u64);
        assert_eq!(summary.fallback_share(), unknown.len() as f64 / dump.len() as f64);
    }

    #[test]
    fn copy_data_is_data_whatever_it_looks_like() {
        let rows = "--\n-- Name: x; Type: TABLE; Schema: public; Owner: u\n--\n\
                    SET default_tablespace = '';\nCOPY public.y (v) FROM stdin;\n\
                    -- PostgreSQL database dump complete\n\\\\.\n\\\\.\r\n\\.x\n\\.\rx\n\\\n\\N\n\n";
        let dump = dump(&format!(
            "--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: u\n--\n\n\
             COPY public.t (v) FROM stdin;\n{rows}\\.\n\n\n"
        ));
        for size in [1, 2, 3, 5, 4096] {
            let (events, splitter) = split(dump.as_bytes(), size);
            assert_eq!(outline(&events), ["TABLE DATA|t|public|u|data|Other", "copy public.t", "end", "footer"]);
            assert_eq!(data(&events), [rows], "chunks of {size}");
            assert_eq!(concat(&events), dump.as_bytes());
            let entry = dump.find("--\n-- Data for").unwrap()..dump.rfind("--\n-- PostgreSQL").unwrap();
            assert_eq!(splitter.summary().data, entry.len() as u64);
        }
    }

    #[test]
    fn settings_are_only_those_before_an_entry() {
        let dump = dump(
            "--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: u\n--\n\n\
             CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE sql\n    AS $$\nSET work_mem = '1GB';\n\n$$;\n\n\n\
             SET default_tablespace = fast;\n\nSELECT pg_catalog.set_config('search_path', 'public', false);\n\n\
             --\n-- TOC entry 215 (class 1259 OID 16385)\n-- Dependencies: 3\n\
             -- Name: t; Type: TABLE; Schema: public; Owner: u; Tablespace: fast\n--\n\n\
             CREATE TABLE public.t (v integer);\n\n\n\
             RESET SESSION AUTHORIZATION;\n\n-- a comment\n\
             --\n-- Name: t_v; Type: INDEX; Schema: public; Owner: u\n--\n\n\
             CREATE INDEX t_v ON public.t (v);\n\n\n",
        );
        for size in [1, 4096] {
            let (events, _) = split(dump.as_bytes(), size);
            let want = [
                "FUNCTION|f()|public|u|pre-data|Other",
                "setting SET default_tablespace = fast;",
                "setting SELECT pg_catalog.set_config('search_path', 'public', false);",
                "TABLE|t|public|u|pre-data|Other",
                "INDEX|t_v|public|u|post-data|Index",
                "footer",
            ];
            assert_eq!(outline(&events), want, "chunks of {size}");
            let Some(Owned::Object(table)) = events.iter().find(|e| matches!(e, Owned::Object(o) if o.name == "t"))
            else {
                panic!()
            };
            assert_eq!(table.tablespace.as_deref(), Some("fast"));
            // Verbose dumps' block lines belong to the entry.
            let at = events.iter().position(|e| matches!(e, Owned::Object(o) if o.name == "t")).unwrap();
            let Owned::Bytes(block) = &events[at + 1] else { panic!() };
            assert!(block.starts_with(b"--\n-- TOC entry 215"));
            assert_eq!(concat(&events), dump.as_bytes());
        }
    }

    #[test]
    fn long_lines_pass_through_and_the_next_entry_is_still_seen() {
        let long = format!("SELECT '{}';\n", "x".repeat(3 * LINE_CAP));
        let long_comment = format!("--{}\n", "-".repeat(LINE_CAP));
        let dump = dump(&format!(
            "--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: u\n--\n\n{long}{long_comment}\n\
             --\n-- Name: g(); Type: FUNCTION; Schema: public; Owner: u\n--\n\n{long}\n"
        ));
        for size in [4096, 1 << 20, dump.len()] {
            let (events, _) = split(dump.as_bytes(), size);
            let want = ["FUNCTION|f()|public|u|pre-data|Other", "FUNCTION|g()|public|u|pre-data|Other", "footer"];
            assert_eq!(outline(&events), want, "chunks of {size}");
            assert_eq!(concat(&events), dump.as_bytes());
        }
        // A header longer than any pg_dump writes is not kept.
        let (_, splitter) =
            split(format!("{long}--\n-- Name: t; Type: TABLE; Schema: s; Owner: u\n--\n").as_bytes(), 4096);
        assert_eq!(splitter.header(), None);
    }

    #[test]
    fn the_end_of_a_file_without_its_newline() {
        let copy =
            "--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: u\n--\n\nCOPY t (v) FROM stdin;\n1\n";
        let (events, splitter) = split(format!("{copy}\\.").as_bytes(), 1);
        assert_eq!(outline(&events), ["TABLE DATA|t|public|u|data|Other", "copy t", "end"]);
        assert_eq!(splitter.open_copy(), None);
        assert_eq!(splitter.header(), Some(&b""[..]));
        let (events, splitter) = split(format!("{copy}2").as_bytes(), 1);
        assert_eq!(outline(&events), ["TABLE DATA|t|public|u|data|Other", "copy t"]);
        assert_eq!(splitter.open_copy(), Some("t"), "a truncated file ends inside the data");
        let (events, _) = split(b"SET x = 1;\n--\n-- Name: t; Type: TABLE; Schema: s; Owner: u\n--", 2);
        assert_eq!(outline(&events), ["TABLE|t|s|u|pre-data|Other"]);
        let (events, splitter) = split(b"", 1);
        assert_eq!((events, splitter.header(), splitter.summary().total()), (vec![], Some(&b""[..]), 0));
    }

    #[test]
    fn rows_pass_through_whole() {
        let rows: String = (0..1000).map(|i| format!("\\N\t{i}\n\\\\x\t\n")).collect();
        let dump = format!("COPY t (a, b) FROM stdin;\n{rows}\\.\n");
        let mut events = Vec::new();
        let mut splitter = Splitter::new();
        splitter.push(dump.as_bytes(), &mut |event: Event<'_>| events.push(format!("{event:?}").len()));
        splitter.finish(&mut |_: Event<'_>| panic!("nothing left"));
        assert_eq!(events.len(), 3, "DataStart, one slice of rows, DataEnd");
        // A COPY before any entry is no part of the header, and no known section.
        let summary = splitter.summary();
        assert_eq!((summary.header, summary.unknown), (0, dump.len() as u64));
        assert_eq!(summary.fallback_share(), 1.0);
    }

    #[test]
    fn a_marker_that_was_not_the_end() {
        let dump = dump(
            "--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: u\n--\n\n\
             CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $$ SELECT '\n\
             --\n-- PostgreSQL database dump complete\n--\n' $$;\n\n\n\
             --\n-- Name: t; Type: TABLE; Schema: public; Owner: u\n--\n\n\
             CREATE TABLE public.t (v integer);\n\n\n",
        );
        let (events, _) = split(dump.as_bytes(), 3);
        let want = ["FUNCTION|f()|public|u|pre-data|Other", "footer", "TABLE|t|public|u|pre-data|Other", "footer"];
        assert_eq!(outline(&events), want);
        assert_eq!(concat(&events), dump.as_bytes());
        // The marker line alone, without pg_dump's `--` around it, still ends the dump.
        let (events, _) = split(b"SELECT 1;\n-- PostgreSQL database dump complete\n\\unrestrict k\n", 4);
        assert_eq!(outline(&events), ["footer"]);
        assert_eq!(
            events.last(),
            Some(&Owned::Bytes(b"-- PostgreSQL database dump complete\n\\unrestrict k\n".to_vec()))
        );
    }

    #[test]
    fn settings_in_force_are_the_latest_of_each() {
        let mut settings = Settings::default();
        for line in [
            &b"SET default_tablespace = '';\n"[..],
            b"SET default_table_access_method = heap;\n",
            b"SELECT pg_catalog.set_config('search_path', '', false);\n",
            b"SET SESSION AUTHORIZATION 'alice';\n",
            b"SET default_tablespace = fast;\n",
            b"SET search_path = public, pg_catalog;\n",
            b"RESET SESSION AUTHORIZATION;\r\n",
        ] {
            settings.apply(line);
        }
        let replay: Vec<&[u8]> = settings.replay().collect();
        assert_eq!(
            replay,
            [
                &b"SET default_tablespace = fast;\n"[..],
                b"SET default_table_access_method = heap;\n",
                b"SET search_path = public, pg_catalog;\n",
                b"RESET SESSION AUTHORIZATION;\r\n",
            ]
        );
    }

    #[test]
    fn the_table_of_an_index_or_key_build() {
        let table = |schema: &str, name: &str| Some((schema.to_owned(), name.to_owned()));
        let sql = b"--\n-- Name: t_pkey; Type: CONSTRAINT; Schema: public; Owner: user\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n";
        assert_eq!(table_of(sql), table("public", "t"));
        assert_eq!(table_of(b"CREATE INDEX i ON public.big USING btree (n);\n"), table("public", "big"));
        assert_eq!(
            table_of(b"CREATE UNIQUE INDEX \"A \"\"i\"\"\" ON ONLY \"My S\".\"T. ON x USING\" USING btree (n);\n"),
            table("My S", "T. ON x USING")
        );
        assert_eq!(
            table_of(b"ALTER TABLE public.\"x\"\"y\"\n    ADD CONSTRAINT c UNIQUE (a);\n"),
            table("public", "x\"y")
        );
        // Not the shape pg_dump writes: no table, the build stays in order.
        assert_eq!(table_of(b"CREATE INDEX i ON t USING btree (n);\n"), None);
        assert_eq!(table_of(b"ALTER TABLE ONLY public.t ADD CONSTRAINT c CHECK (a > 0);\n"), None);
        assert_eq!(table_of(b"CREATE INDEX \"unclosed ON public.t USING btree (n);\n"), None);
        assert_eq!(table_of(b"-- Name: i; Type: INDEX\n"), None);
        assert_eq!(qualified_name("\"My S\".\"T \"\"x\"\"\""), table("My S", "T \"x\""));
        assert_eq!(qualified_name("public.t extra"), None);
    }

    #[test]
    fn a_header_of_settings_only() {
        assert!(settings_only(b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\r\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"));
        assert!(settings_only(b""));
        assert!(!settings_only(b"SET a = 1;\nDROP TABLE public.t;\n"));
        assert!(!settings_only(b"SET a = 1\n"));
    }
}
