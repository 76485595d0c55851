//! The embedded log: append-only files in a local directory, one directory
//! per collection, with the same semantics as the JetStream log (LSNs from 1,
//! request-id dedupe within a window, trimming). Every append is fsynced
//! before it is acknowledged.
//!
//! ```text
//! <dir>/<collection>/<incarnation>/LOCK                 held (flock) while open
//! <dir>/<collection>/<incarnation>/trimmed              highest trimmed LSN
//! <dir>/<collection>/<incarnation>/<first lsn:020>.log  records, in LSN order
//! record := len:u32le crc32(body):u32le body
//! body   := lsn:u64le time_ms:u64le digest:u64le id_len:u16le request_id payload
//! ```
//! A torn record at the end of the newest file (a crash mid-append) is cut
//! off on open; damage anywhere else is reported as corruption.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    AppendOptions, Appended, Log, LogEntry, LogId, LogProvider, Lsn, RequestKey, check_not_trimmed,
};
use crate::clock::now_ms;
use crate::error::{Error, Result};

const HEADER: usize = 8;
const BODY_FIXED: usize = 8 + 8 + 8 + 2;

/// How the embedded log stores records.
#[derive(Debug, Clone)]
pub struct FileLogOptions {
    /// Largest record.
    pub max_record_bytes: usize,
    /// A new file is started once the current one passes this size.
    pub file_bytes: u64,
    /// How long a request id is remembered.
    pub duplicate_window: Duration,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: 8 * 1024 * 1024,
            file_bytes: 64 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Opens file logs under one directory.
#[derive(Debug, Clone)]
pub struct FileLogs {
    dir: PathBuf,
    options: FileLogOptions,
    open: Arc<Mutex<HashMap<String, Arc<FileLog>>>>,
    /// Opens one log at a time: two opens of one directory in this process
    /// would otherwise collide on its lock.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl FileLogs {
    /// Logs under `dir`, one directory per collection.
    pub fn new(dir: impl Into<PathBuf>, options: FileLogOptions) -> Self {
        Self {
            dir: dir.into(),
            options,
            open: Arc::default(),
            opening: Arc::default(),
        }
    }

    fn open_map(&self) -> MutexGuard<'_, HashMap<String, Arc<FileLog>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(id: LogId<'_>) -> String {
        format!("{}/{}", id.collection, id.incarnation)
    }

    async fn open_or_create(&self, id: LogId<'_>, create: bool) -> Result<Arc<dyn Log>> {
        let _one_at_a_time = self.opening.lock().await;
        let key = Self::key(id);
        if let Some(log) = self.open_map().get(&key) {
            return Ok(Arc::clone(log) as Arc<dyn Log>);
        }
        let dir = self.dir.join(id.collection).join(id.incarnation);
        let options = self.options.clone();
        let collection = id.collection.to_string();
        let log = blocking(move || {
            if !create && !dir.is_dir() {
                return Err(Error::CollectionNotFound(collection));
            }
            FileLog::open(dir, collection, options)
        })
        .await?;
        let mut open = self.open_map();
        let log = open.entry(key).or_insert(Arc::new(log));
        Ok(Arc::clone(log) as Arc<dyn Log>)
    }
}

#[async_trait]
impl LogProvider for FileLogs {
    async fn create(&self, id: LogId<'_>) -> Result<Arc<dyn Log>> {
        self.open_or_create(id, true).await
    }

    async fn open(&self, id: LogId<'_>) -> Result<Arc<dyn Log>> {
        self.open_or_create(id, false).await
    }

    async fn delete(&self, id: LogId<'_>) -> Result<()> {
        let _one_at_a_time = self.opening.lock().await;
        let open = self.open_map().remove(&Self::key(id));
        let parent = self.dir.join(id.collection);
        let dir = parent.join(id.incarnation);
        blocking(move || {
            if let Some(log) = open {
                // Operations under way finish first; later ones fail.
                log.state.lock().unwrap_or_else(|p| p.into_inner()).dropped = true;
            }
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(dir.display(), e));
                }
                _ => {}
            }
            // Only succeeds once no other incarnation is left.
            let _ = std::fs::remove_dir(&parent);
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<(String, String)>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            let names = match std::fs::read_dir(&dir) {
                Ok(names) => names,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(Error::io(dir.display(), e)),
            };
            for name in names.flatten() {
                let Ok(collection) = name.file_name().into_string() else {
                    continue;
                };
                let Ok(incarnations) = std::fs::read_dir(name.path()) else {
                    continue;
                };
                for inc in incarnations.flatten() {
                    if let Ok(incarnation) = inc.file_name().into_string()
                        && inc.path().is_dir()
                    {
                        out.push((collection.clone(), incarnation));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        let dir = self.dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
            Ok(())
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::log("file log task", e))?
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    /// Byte offset of each record; record `i` has LSN `first + i`.
    offsets: Vec<u64>,
    len: u64,
}

/// A remembered request id: where it was written and what it asked for.
#[derive(Debug, Clone, Copy)]
struct Seen {
    lsn: Lsn,
    digest: u64,
}

#[derive(Debug)]
struct State {
    dir: PathBuf,
    collection: String,
    /// Set when the log is deleted: appends through old handles fail.
    dropped: bool,
    options: FileLogOptions,
    /// Files by the LSN of their first record.
    files: BTreeMap<Lsn, LogFile>,
    active: File,
    next_lsn: Lsn,
    trimmed_through: Lsn,
    dedupe: HashMap<String, Seen>,
    dedupe_order: VecDeque<(u64, String)>,
    _lock: File,
}

#[derive(Debug)]
pub(super) struct FileLog {
    state: Arc<Mutex<State>>,
    max_record_bytes: usize,
    duplicate_window: Duration,
}

fn file_name(first: Lsn) -> String {
    format!("{first:020}.log")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display(), e))
}

impl FileLog {
    fn open(dir: PathBuf, collection: String, options: FileLogOptions) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(lock_path.display(), e))?;
        lock.try_lock().map_err(|_| {
            Error::log(
                "open",
                format!("{} is in use by another process", dir.display()),
            )
        })?;

        let trimmed_through = match std::fs::read_to_string(dir.join("trimmed")) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|e| Error::corrupt(dir.join("trimmed").display().to_string(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(dir.join("trimmed").display(), e)),
        };

        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(dir.display(), e))? {
            let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
                continue;
            };
            if let Ok(first) = stem.parse::<Lsn>() {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let window_start = now_ms().saturating_sub(options.duplicate_window.as_millis() as u64);
        let mut files = BTreeMap::new();
        let mut dedupe = HashMap::new();
        let mut dedupe_order = VecDeque::new();
        let mut next_lsn = (trimmed_through + 1).max(firsts.first().copied().unwrap_or(1));
        for (i, first) in firsts.iter().enumerate() {
            let last_file = i + 1 == firsts.len();
            let path = dir.join(file_name(*first));
            if *first != next_lsn && !files.is_empty() {
                return Err(Error::corrupt(
                    path.display().to_string(),
                    format!("starts at lsn {first}, expected {next_lsn}"),
                ));
            }
            next_lsn = *first;
            let file = scan(
                &path,
                *first,
                last_file,
                options.max_record_bytes,
                |lsn, time_ms, digest, id| {
                    if time_ms >= window_start && !id.is_empty() {
                        dedupe.insert(id.to_string(), Seen { lsn, digest });
                        dedupe_order.push_back((time_ms, id.to_string()));
                    }
                },
            )?;
            next_lsn += file.offsets.len() as u64;
            files.insert(*first, file);
        }
        next_lsn = next_lsn.max(trimmed_through + 1);

        let active_first = match files.last_key_value() {
            Some((first, _)) => *first,
            None => {
                let path = dir.join(file_name(next_lsn));
                File::create(&path).map_err(|e| Error::io(path.display(), e))?;
                sync_dir(&dir)?;
                files.insert(
                    next_lsn,
                    LogFile {
                        path,
                        offsets: Vec::new(),
                        len: 0,
                    },
                );
                next_lsn
            }
        };
        let active_path = &files[&active_first].path;
        let active = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(|e| Error::io(active_path.display(), e))?;

        let state = State {
            dir,
            collection,
            dropped: false,
            options: options.clone(),
            files,
            active,
            next_lsn,
            trimmed_through,
            dedupe,
            dedupe_order,
            _lock: lock,
        };
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            max_record_bytes: options.max_record_bytes,
            duplicate_window: options.duplicate_window,
        })
    }

    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let state = Arc::clone(&self.state);
        blocking(move || {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            if guard.dropped {
                return Err(Error::CollectionNotFound(guard.collection.clone()));
            }
            f(&mut guard)
        })
        .await
    }
}

/// Reads a log file's record offsets, checking every record. Only the newest
/// file may end in a torn append (a crash mid-write): a last record that is
/// incomplete or fails its checksum is cut off. Damage followed by more
/// records is corruption and is reported, never cut, since the records after
/// it were acknowledged.
fn scan(
    path: &Path,
    first: Lsn,
    is_last: bool,
    max_record_bytes: usize,
    mut seen: impl FnMut(Lsn, u64, u64, &str),
) -> Result<LogFile> {
    let shown = || path.display().to_string();
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::io(shown(), e))?;
    let mut offsets = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let expected = first + offsets.len() as u64;
        match decode_at(&data, pos) {
            Decoded::Record {
                lsn,
                time_ms,
                digest,
                id,
                next,
                ..
            } if lsn == expected => {
                seen(lsn, time_ms, digest, id);
                offsets.push(pos as u64);
                pos = next;
            }
            Decoded::Record { lsn, .. } => {
                return Err(Error::corrupt(
                    shown(),
                    format!("record at byte {pos} has lsn {lsn}, expected {expected}"),
                ));
            }
            Decoded::Bad { ends_at } => {
                let remaining = data.len() - pos;
                let torn = match ends_at {
                    // Runs past the end: a torn append if no longer than one record can be.
                    Some(end) if end > data.len() => {
                        remaining <= HEADER + BODY_FIXED + u16::MAX as usize + max_record_bytes
                    }
                    // Complete but failing its checksum: torn only if it is the last one.
                    Some(end) => end == data.len(),
                    None => remaining < HEADER,
                };
                if !(torn && is_last) {
                    return Err(Error::corrupt(
                        shown(),
                        format!("damaged record at byte {pos}"),
                    ));
                }
                tracing::warn!(path = %shown(), at = pos, "cutting off a torn record at the end of the log");
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(shown(), e))?;
                file.set_len(pos as u64)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| Error::io(shown(), e))?;
                break;
            }
        }
    }
    Ok(LogFile {
        path: path.to_path_buf(),
        offsets,
        len: pos as u64,
    })
}

enum Decoded<'a> {
    Record {
        lsn: Lsn,
        time_ms: u64,
        digest: u64,
        id: &'a str,
        payload: std::ops::Range<usize>,
        next: usize,
    },
    /// Not a valid record; `ends_at` is where its header says it ends.
    Bad { ends_at: Option<usize> },
}

fn decode_at(data: &[u8], pos: usize) -> Decoded<'_> {
    let Some(header) = data.get(pos..pos + HEADER) else {
        return Decoded::Bad { ends_at: None };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body_start = pos + HEADER;
    let end = body_start + len;
    let bad = Decoded::Bad { ends_at: Some(end) };
    let Some(body) = data.get(body_start..end) else {
        return bad;
    };
    if len < BODY_FIXED || crc32fast::hash(body) != crc {
        return bad;
    }
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let id_len = u16::from_le_bytes([body[24], body[25]]) as usize;
    let Some(id) = body
        .get(BODY_FIXED..BODY_FIXED + id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
    else {
        return bad;
    };
    Decoded::Record {
        lsn: word(0),
        time_ms: word(8),
        digest: word(16),
        id,
        payload: body_start + BODY_FIXED + id_len..end,
        next: end,
    }
}

fn encode(lsn: Lsn, time_ms: u64, request: Option<RequestKey<'_>>, payload: &[u8]) -> Vec<u8> {
    let (id, digest) = request.map_or(("", 0), |r| (r.id, r.digest));
    let len = BODY_FIXED + id.len() + payload.len();
    let mut out = Vec::with_capacity(HEADER + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(&digest.to_le_bytes());
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

impl State {
    fn last_lsn(&self) -> Lsn {
        self.next_lsn - 1
    }

    fn first_lsn(&self) -> Lsn {
        (self.trimmed_through + 1).max(self.files.keys().next().copied().unwrap_or(self.next_lsn))
    }

    fn expire_dedupe(&mut self, now: u64) {
        let window = self.options.duplicate_window.as_millis() as u64;
        while let Some((time, _)) = self.dedupe_order.front() {
            if now.saturating_sub(*time) <= window {
                break;
            }
            if let Some((_, id)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&id);
            }
        }
    }

    fn append(
        &mut self,
        payload: &[u8],
        request: Option<RequestKey<'_>>,
        expected_last: Option<Lsn>,
    ) -> Result<Appended> {
        let now = now_ms();
        self.expire_dedupe(now);
        if let Some(request) = request
            && let Some(seen) = self.dedupe.get(request.id)
        {
            if seen.digest != request.digest {
                return Err(Error::RequestIdReused {
                    request_id: request.id.to_string(),
                });
            }
            return Ok(Appended {
                lsn: seen.lsn,
                duplicate: true,
            });
        }
        if let Some(expected) = expected_last
            && expected != self.last_lsn()
        {
            return Err(Error::LogMoved { expected });
        }
        if self
            .files
            .last_key_value()
            .is_some_and(|(_, f)| f.len >= self.options.file_bytes)
        {
            self.roll()?;
        }
        let lsn = self.next_lsn;
        let record = encode(lsn, now, request, payload);
        let (_, file) = self
            .files
            .last_key_value()
            .ok_or_else(|| Error::log("append", "no active log file"))?;
        let path = file.path.display().to_string();
        let start = file.len;
        if let Err(e) = self
            .active
            .write_all(&record)
            .and_then(|_| self.active.sync_data())
        {
            // Leave no partial record behind for the next append to follow.
            let _ = self.active.set_len(start);
            return Err(Error::io(path, e));
        }
        let Some(mut entry) = self.files.last_entry() else {
            return Err(Error::log("append", "no active log file"));
        };
        let file = entry.get_mut();
        file.offsets.push(start);
        file.len += record.len() as u64;
        self.next_lsn += 1;
        if let Some(request) = request {
            let seen = Seen {
                lsn,
                digest: request.digest,
            };
            self.dedupe.insert(request.id.to_string(), seen);
            self.dedupe_order.push_back((now, request.id.to_string()));
        }
        Ok(Appended {
            lsn,
            duplicate: false,
        })
    }

    /// Starts a new active file beginning at the next LSN.
    fn roll(&mut self) -> Result<()> {
        let path = self.dir.join(file_name(self.next_lsn));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(path.display(), e))?;
        sync_dir(&self.dir)?;
        self.files.insert(
            self.next_lsn,
            LogFile {
                path,
                offsets: Vec::new(),
                len: 0,
            },
        );
        self.active = file;
        Ok(())
    }

    fn read(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>> {
        let from = from.max(1);
        check_not_trimmed(from, self.first_lsn(), self.last_lsn())?;
        let from = from.max(self.first_lsn());
        let mut out = Vec::new();
        let start_file = self
            .files
            .range(..=from)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(from);
        for (first, file) in self.files.range(start_file..) {
            if out.len() >= max_records {
                break;
            }
            let skip = from.saturating_sub(*first) as usize;
            if skip >= file.offsets.len() {
                continue;
            }
            let take = (file.offsets.len() - skip).min(max_records - out.len());
            let begin = file.offsets[skip];
            let end = file.offsets.get(skip + take).copied().unwrap_or(file.len);
            let mut data = vec![0u8; (end - begin) as usize];
            let shown = || file.path.display().to_string();
            File::open(&file.path)
                .and_then(|f| f.read_exact_at(&mut data, begin))
                .map_err(|e| Error::io(shown(), e))?;
            let data = Bytes::from(data);
            let mut pos = 0usize;
            for i in 0..take {
                let Decoded::Record {
                    lsn, payload, next, ..
                } = decode_at(&data, pos)
                else {
                    return Err(Error::corrupt(
                        shown(),
                        format!("damaged record at byte {}", begin as usize + pos),
                    ));
                };
                let expected = first + (skip + i) as u64;
                if lsn != expected {
                    return Err(Error::corrupt(
                        shown(),
                        format!("found lsn {lsn}, expected {expected}"),
                    ));
                }
                out.push(LogEntry {
                    lsn,
                    payload: data.slice(payload),
                });
                pos = next;
            }
        }
        Ok(out)
    }

    fn trim(&mut self, through: Lsn) -> Result<()> {
        let through = through.min(self.last_lsn());
        if through <= self.trimmed_through {
            return Ok(());
        }
        // Record the trim point durably first: files deleted afterwards can
        // then never make a trimmed LSN readable, or a crash lose track.
        let tmp = self.dir.join("trimmed.tmp");
        let dst = self.dir.join("trimmed");
        std::fs::write(&tmp, through.to_string())
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &dst))
            .map_err(|e| Error::io(dst.display(), e))?;
        sync_dir(&self.dir)?;
        self.trimmed_through = through;

        // The active file is only dropped once a fresh one takes over.
        let active_first = self
            .files
            .last_key_value()
            .map(|(k, _)| *k)
            .unwrap_or(self.next_lsn);
        if through >= self.last_lsn() && self.next_lsn > active_first {
            self.roll()?;
        }
        let firsts: Vec<Lsn> = self.files.keys().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first - 1 <= through
                && let Some(file) = self.files.remove(&first)
            {
                std::fs::remove_file(&file.path).map_err(|e| Error::io(file.path.display(), e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

#[async_trait]
impl Log for FileLog {
    async fn append(&self, payload: Bytes, options: AppendOptions<'_>) -> Result<Appended> {
        if payload.len() > self.max_record_bytes {
            return Err(Error::RecordTooLarge {
                size: payload.len(),
                max: self.max_record_bytes,
            });
        }
        if let Some(request) = options.request
            && request.id.len() > u16::MAX as usize
        {
            return Err(Error::invalid("request_id", "longer than 65535 bytes"));
        }
        let request = options.request.map(|r| (r.id.to_string(), r.digest));
        let expected_last = options.expected_last;
        self.with_state(move |s| {
            let request = request.as_ref().map(|(id, digest)| RequestKey {
                id,
                digest: *digest,
            });
            s.append(&payload, request, expected_last)
        })
        .await
    }

    async fn find_request(&self, request: RequestKey<'_>) -> Result<Option<Appended>> {
        let (id, digest) = (request.id.to_string(), request.digest);
        self.with_state(move |s| {
            s.expire_dedupe(now_ms());
            match s.dedupe.get(&id) {
                Some(seen) if seen.digest != digest => {
                    Err(Error::RequestIdReused { request_id: id })
                }
                Some(seen) => Ok(Some(Appended {
                    lsn: seen.lsn,
                    duplicate: true,
                })),
                None => Ok(None),
            }
        })
        .await
    }

    async fn read(&self, from: Lsn, max_records: usize) -> Result<Vec<LogEntry>> {
        self.with_state(move |s| s.read(from, max_records.max(1)))
            .await
    }

    async fn last_lsn(&self) -> Result<Lsn> {
        self.with_state(|s| Ok(s.last_lsn())).await
    }

    async fn first_lsn(&self) -> Result<Lsn> {
        self.with_state(|s| Ok(s.first_lsn())).await
    }

    async fn trim(&self, through: Lsn) -> Result<()> {
        self.with_state(move |s| s.trim(through)).await
    }

    fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    fn duplicate_window(&self) -> Duration {
        self.duplicate_window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: LogId<'static> = LogId {
        collection: "c",
        incarnation: "i",
    };

    #[tokio::test]
    async fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let logs = FileLogs::new(dir.path(), FileLogOptions::default());
        let log = logs.create(ID).await.unwrap();
        for i in 0..3u8 {
            log.append(Bytes::from(vec![i; 10]), AppendOptions::default())
                .await
                .unwrap();
        }
        drop(log);
        drop(logs);
        // Simulate a crash halfway through a fourth append.
        let path = dir.path().join("c").join("i").join(file_name(1));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(4, 0, None, &[9; 10])[..12]).unwrap();
        drop(f);

        let logs = FileLogs::new(dir.path(), FileLogOptions::default());
        let log = logs.create(ID).await.unwrap();
        assert_eq!(log.last_lsn().await.unwrap(), 3);
        assert_eq!(
            log.append(Bytes::from_static(b"x"), AppendOptions::default())
                .await
                .unwrap()
                .lsn,
            4
        );
        let all = log.read(1, 100).await.unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].payload, Bytes::from_static(b"x"));
    }

    #[tokio::test]
    async fn damage_in_the_middle_is_reported_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let logs = FileLogs::new(dir.path(), FileLogOptions::default());
        let log = logs.create(ID).await.unwrap();
        for _ in 0..3 {
            log.append(Bytes::from(vec![1; 100]), AppendOptions::default())
                .await
                .unwrap();
        }
        drop(log);
        drop(logs);
        let path = dir.path().join("c").join("i").join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + BODY_FIXED + 5] ^= 0xff; // inside record 1's payload
        std::fs::write(&path, &bytes).unwrap();
        // Records 2 and 3 follow the damaged one and were acknowledged:
        // opening must fail loudly instead of cutting them off.
        let logs = FileLogs::new(dir.path(), FileLogOptions::default());
        let err = logs.create(ID).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileLogs::new(dir.path(), FileLogOptions::default());
        let _log = a.create(ID).await.unwrap();
        let b = FileLogs::new(dir.path(), FileLogOptions::default());
        let err = b.create(ID).await.unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
