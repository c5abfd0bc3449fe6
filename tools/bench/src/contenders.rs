//! The storage contenders compared on the same payloads in the same
//! directory: the physical floor of the design, a Kopi-style single file,
//! cacache, SQLite and snapcache itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Error type of the bench.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result type of the bench.
pub type Result<T> = std::result::Result<T, BoxError>;

/// One way of storing "the current metadata document".
pub trait Contender {
    /// Short name used in tables and the chart.
    fn name(&self) -> &'static str;
    /// Store `payload` as the new current document.
    fn write(&mut self, payload: &[u8]) -> Result<()>;
    /// Read the current document back.
    fn read(&mut self) -> Result<Vec<u8>>;
    /// Untimed housekeeping between iterations (e.g. deleting files the
    /// contender itself would leave behind forever).
    fn after_iteration(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Write `bytes` to a new file at `path`, then `fsync` it when `sync`.
pub fn write_file(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    if sync { f.sync_all() } else { Ok(()) }
}

/// `fsync` a directory so that renames and creations in it are durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Read a whole file with one allocation of the right size.
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Delete every file in `dir` but the one named `keep` (the floor's
/// untimed cleanup of superseded snapshots).
pub fn remove_all_but(dir: &Path, keep: &str) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy() != keep {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The physical limit of snapcache's design, written directly with `std`:
/// hash the payload (the snapshot is named by its blake3 hash and the
/// pointer carries it), write it to `tmp/` + `fsync`, rename into
/// `snapshots/<hash>`, `fsync` `snapshots/`, then write a small pointer to
/// `tmp/` + `fsync` + rename over `current` + `fsync` the root. Nothing
/// else: no lock, no validation, no history, no sweeping.
pub struct Floor {
    root: PathBuf,
    seq: u64,
    verify: bool,
    sync: bool,
    /// Deletes the snapshot its previous write superseded inside each write,
    /// on a second thread from the write's start (see [`Floor::deleting`]).
    deleting: bool,
    current: Option<String>,
}

impl Floor {
    /// A floor store in `root` (created). `verify` selects the verified read
    /// (blake3 of the bytes compared with the pointer) or a plain read.
    pub fn new(root: &Path, verify: bool) -> Result<Self> {
        fs::create_dir_all(root.join("tmp"))?;
        fs::create_dir_all(root.join("snapshots"))?;
        Ok(Self {
            root: root.to_path_buf(),
            seq: 0,
            verify,
            sync: true,
            deleting: false,
            current: None,
        })
    }

    /// The same sequence without any `fsync` and with a plain (unverified)
    /// read: not a contender, the reference that isolates what `fsync` and
    /// hashing cost.
    pub fn reference(root: &Path) -> Result<Self> {
        let mut f = Self::new(root, false)?;
        f.sync = false;
        Ok(f)
    }

    /// The floor that, like snapcache, removes the snapshot it superseded
    /// inside a publish: each write unlinks the previous write's snapshot on
    /// a second thread, started before anything else and joined before the
    /// write returns (as early in a publish as an unlink can start). Not a
    /// budget's baseline: it shows what deleting costs on this filesystem.
    pub fn deleting(root: &Path) -> Result<Self> {
        let mut f = Self::new(root, true)?;
        f.deleting = true;
        Ok(f)
    }

    /// The durable sequence itself (see the type's documentation).
    fn write_floor(&mut self, payload: &[u8]) -> Result<()> {
        self.seq += 1;
        let hash = blake3::hash(payload).to_hex();
        let tmp = self.root.join("tmp").join(format!("snap.{}", self.seq));
        write_file(&tmp, payload, self.sync)?;
        let snapshots = self.root.join("snapshots");
        fs::rename(&tmp, snapshots.join(hash.as_str()))?;
        if self.sync {
            sync_dir(&snapshots)?;
        }
        let pointer = format!("{hash} {}\n", payload.len());
        let ptmp = self.root.join("tmp").join(format!("current.{}", self.seq));
        write_file(&ptmp, pointer.as_bytes(), self.sync)?;
        fs::rename(&ptmp, self.root.join("current"))?;
        if self.sync {
            sync_dir(&self.root)?;
        }
        self.current = Some(hash.to_string());
        Ok(())
    }
}

impl Contender for Floor {
    fn name(&self) -> &'static str {
        match (self.verify, self.sync) {
            (true, true) if self.deleting => crate::results::names::FLOOR_DELETING,
            (true, true) => crate::results::names::FLOOR,
            (false, false) => crate::results::names::REFERENCE,
            _ => "floor variant",
        }
    }

    fn write(&mut self, payload: &[u8]) -> Result<()> {
        let superseded = self
            .current
            .as_ref()
            .filter(|_| self.deleting)
            .map(|hash| self.root.join("snapshots").join(hash));
        // The budgets' floor and the first write of the deleting one: the
        // sequence alone, with no thread scope around it.
        let Some(path) = superseded else {
            return self.write_floor(payload);
        };
        std::thread::scope(|scope| {
            let unlink = scope.spawn(move || fs::remove_file(path));
            let written = self.write_floor(payload);
            match unlink.join() {
                Err(_) => Err("floor: the unlinking thread panicked".into()),
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(())) => written,
            }
        })
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        let pointer = fs::read_to_string(self.root.join("current"))?;
        let mut parts = pointer.split_whitespace();
        let (Some(hash), Some(len)) = (parts.next(), parts.next()) else {
            return Err("floor: malformed pointer".into());
        };
        let len: usize = len.parse()?;
        let bytes = read_all(&self.root.join("snapshots").join(hash))?;
        if bytes.len() != len {
            return Err("floor: length mismatch".into());
        }
        if self.verify && blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err("floor: hash mismatch".into());
        }
        Ok(bytes)
    }

    fn after_iteration(&mut self) -> Result<()> {
        // Keep the disk footprint bounded: drop every snapshot but the
        // current one (untimed; the floor has no history). The deleting
        // floor does it in its next write.
        match self.current.as_ref().filter(|_| !self.deleting) {
            Some(current) => remove_all_but(&self.root.join("snapshots"), current),
            None => Ok(()),
        }
    }
}

/// Kopi's own save: write a temp file + `fsync`, rename over the cache
/// file. No directory `fsync` (the rename may be lost on power failure), no
/// history, no verification on read.
pub struct KopiFile {
    dir: PathBuf,
}

impl KopiFile {
    /// A Kopi-style cache file in `dir` (created).
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Contender for KopiFile {
    fn name(&self) -> &'static str {
        "kopi single file"
    }

    fn write(&mut self, payload: &[u8]) -> Result<()> {
        let tmp = self.dir.join("metadata.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(payload)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.dir.join("metadata.json"))?;
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        Ok(read_all(&self.dir.join("metadata.json"))?)
    }
}

/// cacache's synchronous API: `write_sync` (content file named by its
/// SHA-256 integrity, then an appended index entry) and `read_sync`
/// (verifies the integrity). cacache never calls `fsync`, so its writes are
/// not durable: it is in the table as the popular "content-addressed cache"
/// crate, not as a like-for-like durable store.
pub struct Cacache {
    dir: PathBuf,
    current: Option<cacache::Integrity>,
    previous: Option<cacache::Integrity>,
}

/// Key (or row key) under which every contender stores the document.
const KEY: &str = "kopi-metadata";

impl Cacache {
    /// A cacache in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            current: None,
            previous: None,
        }
    }
}

impl Contender for Cacache {
    fn name(&self) -> &'static str {
        "cacache"
    }

    fn write(&mut self, payload: &[u8]) -> Result<()> {
        let integrity = cacache::write_sync(&self.dir, KEY, payload)?;
        self.previous = self.current.replace(integrity);
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        Ok(cacache::read_sync(&self.dir, KEY)?)
    }

    fn after_iteration(&mut self) -> Result<()> {
        // cacache keeps every content blob until an explicit removal; drop
        // the superseded one (untimed) so a 64 MiB run does not fill the disk.
        if let Some(old) = self.previous.take()
            && Some(&old) != self.current.as_ref()
        {
            cacache::remove_hash_sync(&self.dir, &old)?;
        }
        Ok(())
    }
}

/// SQLite (bundled) through rusqlite: WAL journal, `synchronous=FULL`, one
/// row written with `INSERT OR REPLACE` and read back with a `SELECT`. The
/// connection stays open across iterations, as in a long-lived process.
pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    /// A database file `cache.db` in `dir` (created).
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let conn = rusqlite::Connection::open(dir.join("cache.db"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("sqlite refused WAL mode: {mode}").into());
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cache (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
        )?;
        Ok(Self { conn })
    }
}

impl Contender for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite (WAL, FULL)"
    }

    fn write(&mut self, payload: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO cache (k, v) VALUES (?1, ?2)",
            rusqlite::params![KEY, payload],
        )?;
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        Ok(self
            .conn
            .query_row("SELECT v FROM cache WHERE k = ?1", [KEY], |r| r.get(0))?)
    }
}

/// snapcache through its library: `Store::publish_bytes` (JSON validated
/// unless `raw`) and `Store::read_current` (length + blake3 verified).
pub struct Snapcache {
    store: snapcache::Store,
    options: snapcache::PublishOptions,
    raw: bool,
}

impl Snapcache {
    /// A store rooted at `root` (created on first publish).
    pub fn new(root: &Path, raw: bool) -> Result<Self> {
        let store = snapcache::Store::open(snapcache::StoreOptions::new(root))?;
        Ok(Self {
            store,
            options: snapcache::PublishOptions::default().raw(raw),
            raw,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &snapcache::Store {
        &self.store
    }
}

impl Contender for Snapcache {
    fn name(&self) -> &'static str {
        if self.raw {
            "snapcache (raw)"
        } else {
            "snapcache"
        }
    }

    fn write(&mut self, payload: &[u8]) -> Result<()> {
        let outcome = self.store.publish_bytes(payload, &self.options)?;
        if !outcome.changed {
            return Err("snapcache: publish did not change the store (duplicate payload)".into());
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<u8>> {
        Ok(self.store.read_current()?.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_reads_back_what_it_wrote() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let mut list: Vec<Box<dyn Contender>> = vec![
            Box::new(Floor::new(&d.join("floor"), true)?),
            Box::new(Floor::reference(&d.join("reference"))?),
            Box::new(KopiFile::new(&d.join("kopi"))?),
            Box::new(Cacache::new(&d.join("cacache"))),
            Box::new(Sqlite::new(&d.join("sqlite"))?),
            Box::new(Snapcache::new(&d.join("snapcache"), false)?),
            Box::new(Snapcache::new(&d.join("snapcache-raw"), true)?),
        ];
        for round in 0..3u8 {
            let payload = format!("{{\"round\": {round}}}").into_bytes();
            for c in &mut list {
                c.write(&payload)?;
                assert_eq!(c.read()?, payload, "{}", c.name());
                c.after_iteration()?;
                assert_eq!(c.read()?, payload, "{} after cleanup", c.name());
            }
        }
        // The floor keeps only the current snapshot after its cleanup.
        assert_eq!(fs::read_dir(d.join("floor/snapshots"))?.count(), 1);
        Ok(())
    }

    #[test]
    fn the_floor_detects_a_damaged_snapshot() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut floor = Floor::new(dir.path(), true)?;
        floor.write(b"{\"a\": 1}")?;
        let snap = fs::read_dir(dir.path().join("snapshots"))?
            .next()
            .ok_or("no snapshot")??
            .path();
        fs::write(&snap, b"{\"a\": 2}")?;
        assert!(floor.read().is_err());
        Ok(())
    }
}
