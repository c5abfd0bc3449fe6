fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d = tempfile::tempdir()?;
    cacache::write_sync(d.path(), "k", b"hello")?;
    let v = cacache::read_sync(d.path(), "k")?;
    println!("{}", v.len());
    let c = rusqlite::Connection::open(d.path().join("db"))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}
