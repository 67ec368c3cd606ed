//! Fixed newstyle handshake and option haggling ("Handshake" in
//! `nbd-protocol.md`).
//!
//! ```text
//!   S: NBDMAGIC IHAVEOPT flags(FIXED_NEWSTYLE|NO_ZEROES)
//!   C: client flags            (unknown bits -> drop the connection)
//!   loop:
//!     C: IHAVEOPT option length data     (data > 64 KiB: TOO_BIG or drop)
//!     S: one or more option replies, or for EXPORT_NAME the export info
//!   until EXPORT_NAME, GO + ACK (-> transmission) or ABORT (-> close)
//! ```
//!
//! No TLS: STARTTLS is answered with `NBD_REP_ERR_POLICY` (NOTLS mode).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, InfoRequest, MetaRequest, OPTION_HEADER_LEN};
use super::proto::{self, Opt, info, rep, tflag};
use super::{Export, ExportProvider, MetaContext};
use crate::blockdev::ChangeMap;
use crate::error::ErrorKind;

/// Option data kept in memory at most.
pub const MAX_OPTION_DATA: u32 = 64 << 10;
/// Larger option data up to this is read and thrown away (then
/// `NBD_REP_ERR_TOO_BIG`); beyond it the connection is dropped.
pub const MAX_OPTION_SKIP: u32 = 1 << 20;

/// Everything the transmission phase needs from the handshake.
pub struct Negotiated {
    pub export: Export,
    pub structured: bool,
    /// The metadata contexts selected for this export, by id.
    pub contexts: Vec<MetaContext>,
    pub size: u64,
    pub min_block: u32,
}

/// Size constraints advertised for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    pub min: u32,
    pub preferred: u32,
    pub max: u32,
}

impl BlockSizes {
    /// Minimum 512 (or the device's block size, as a power of two up to
    /// 64 KiB), preferred 4096 (or that block size), maximum `max_payload`
    /// (the largest READ/WRITE the connection accepts, 32 MiB by default).
    ///
    /// Every offset and length is *served* on every connection (unaligned
    /// ones by read-modify-write of the edge blocks under a range lock, see
    /// `stack/grain.rs`), so a client that negotiated nothing (EXPORT_NAME)
    /// works. The advertised minimum is the device's block all the same: a
    /// client that honours it (qemu) then sends whole blocks only, and the
    /// volume keeps its lock-free write path; the first byte-granular write
    /// puts every later write of the volume under the lock.
    pub fn for_device(dev_block: u32, max_payload: u32) -> BlockSizes {
        let min = dev_block
            .clamp(512, 1 << 16)
            .next_power_of_two()
            .min(1 << 16);
        let preferred = min.max(4096);
        BlockSizes {
            min,
            preferred,
            max: max_payload.max(preferred),
        }
    }
}

/// Transmission flags for an export.
pub fn transmission_flags(read_only: bool, structured: bool) -> u16 {
    let mut f = tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::SEND_CACHE | tflag::CAN_MULTI_CONN;
    if read_only {
        f |= tflag::READ_ONLY;
    } else {
        f |= tflag::SEND_FUA | tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES | tflag::SEND_FAST_ZERO;
    }
    if structured {
        f |= tflag::SEND_DF;
    }
    f
}

fn protocol(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// State of option haggling.
struct Haggle<'a, S> {
    io: &'a mut S,
    provider: &'a dyn ExportProvider,
    max_payload: u32,
    no_zeroes: bool,
    structured: bool,
    /// The export the metadata contexts were selected for, and their
    /// names in the order of their ids (1, 2, ...).
    meta_for: Option<(String, Vec<String>)>,
}

/// Runs the handshake. `Ok(None)`: the client aborted; `Err`: the
/// connection must be dropped (I/O error or a violation).
pub async fn negotiate<S>(
    io: &mut S,
    provider: &dyn ExportProvider,
    max_payload: u32,
) -> io::Result<Option<Negotiated>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; 18];
    hello[0..8].copy_from_slice(&proto::NBDMAGIC.to_be_bytes());
    hello[8..16].copy_from_slice(&proto::IHAVEOPT.to_be_bytes());
    let hflags = proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES;
    hello[16..18].copy_from_slice(&hflags.to_be_bytes());
    io.write_all(&hello).await?;
    let cflags = io.read_u32().await?;
    if cflags & !proto::CLIENT_FLAGS_KNOWN != 0 {
        return Err(protocol(format!("unknown client flags {cflags:#x}")));
    }
    let mut h = Haggle {
        io,
        provider,
        max_payload,
        no_zeroes: cflags & proto::FLAG_C_NO_ZEROES != 0,
        structured: false,
        meta_for: None,
    };
    loop {
        if let Some(end) = h.option().await? {
            return Ok(end);
        }
    }
}

/// What an option did: `None` to go on haggling, `Some(end)` to stop.
type Step = Option<Option<Negotiated>>;

impl<S: AsyncRead + AsyncWrite + Unpin> Haggle<'_, S> {
    async fn option(&mut self) -> io::Result<Step> {
        let mut hdr = [0u8; OPTION_HEADER_LEN];
        self.io.read_exact(&mut hdr).await?;
        let (magic, opt, len) = codec::parse_option_header(&hdr);
        if magic != proto::IHAVEOPT {
            return Err(protocol(format!("bad option magic {magic:#x}")));
        }
        let o = Opt::from_wire(opt);
        if len > MAX_OPTION_DATA {
            if o == Opt::ExportName || len > MAX_OPTION_SKIP {
                return Err(protocol(format!("option {opt} has {len} bytes of data")));
            }
            self.skip(len).await?;
            self.reply(opt, rep::ERR_TOO_BIG, b"option data is too large")
                .await?;
            return Ok(None);
        }
        // At most MAX_OPTION_DATA bytes.
        let mut data = vec![0u8; len as usize];
        self.io.read_exact(&mut data).await?;
        tracing::trace!("nbd option {o:?} with {len} bytes");
        match o {
            Opt::ExportName => self.export_name(&data).await,
            Opt::Abort => {
                // The client may close without waiting for the ACK.
                let _ = self.reply(opt, rep::ACK, &[]).await;
                Ok(Some(None))
            }
            Opt::List => self.list(opt, &data).await.map(|()| None),
            Opt::StartTls => {
                let msg = b"TLS is not configured on this server";
                self.reply(opt, rep::ERR_POLICY, msg).await.map(|()| None)
            }
            Opt::Info | Opt::Go => self.info_go(o, &data).await,
            Opt::StructuredReply => self.structured_reply(opt, &data).await.map(|()| None),
            Opt::ListMetaContext | Opt::SetMetaContext => {
                self.meta_context(o, &data).await.map(|()| None)
            }
            Opt::Unknown(_) => {
                let msg = format!("option {opt} is not supported");
                self.reply(opt, rep::ERR_UNSUP, msg.as_bytes())
                    .await
                    .map(|()| None)
            }
        }
    }

    async fn skip(&mut self, mut len: u32) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        while len > 0 {
            let n = (len as usize).min(buf.len());
            let got = self.io.read(&mut buf[..n]).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            len -= got as u32;
        }
        Ok(())
    }

    async fn reply(&mut self, opt: u32, typ: u32, data: &[u8]) -> io::Result<()> {
        self.io
            .write_all(&codec::option_reply(opt, typ, data))
            .await
    }

    async fn export_name(&mut self, data: &[u8]) -> io::Result<Step> {
        let name = codec::parse_export_name(data).map_err(|m| protocol(m.to_string()))?;
        // EXPORT_NAME cannot fail politely: an unknown export drops the
        // connection, as the spec requires.
        let export = self
            .provider
            .open(&name)
            .map_err(|e| protocol(format!("export {name:?}: {e}")))?;
        let neg = self.negotiated(&name, export);
        let flags = transmission_flags(neg.export.read_only, self.structured);
        let mut v = Vec::with_capacity(134);
        v.extend_from_slice(&neg.size.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        if !self.no_zeroes {
            v.extend_from_slice(&[0u8; 124]);
        }
        self.io.write_all(&v).await?;
        Ok(Some(Some(neg)))
    }

    fn negotiated(&self, name: &str, export: Export) -> Negotiated {
        let mut contexts = Vec::new();
        if let Some((n, names)) = &self.meta_for
            && n == name
        {
            for (i, c) in names.iter().enumerate() {
                let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
                if c == proto::META_BASE_ALLOCATION {
                    contexts.push(MetaContext { id, map: None });
                } else if let Some(map) = bitmap(&export, c) {
                    // A bitmap gone since it was selected is left out.
                    contexts.push(MetaContext { id, map: Some(map) });
                }
            }
        }
        Negotiated {
            size: export.dev.size(),
            // Served whatever the client negotiated (see `for_device`).
            min_block: 1,
            structured: self.structured,
            contexts,
            export,
        }
    }

    async fn list(&mut self, opt: u32, data: &[u8]) -> io::Result<()> {
        if !data.is_empty() {
            return self
                .reply(opt, rep::ERR_INVALID, b"NBD_OPT_LIST takes no data")
                .await;
        }
        for (name, desc) in self.provider.list() {
            let mut v = Vec::with_capacity(4 + name.len() + desc.len());
            v.extend_from_slice(&(name.len() as u32).to_be_bytes());
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(desc.as_bytes());
            self.reply(opt, rep::SERVER, &v).await?;
        }
        self.reply(opt, rep::ACK, &[]).await
    }

    async fn structured_reply(&mut self, opt: u32, data: &[u8]) -> io::Result<()> {
        if !data.is_empty() {
            let msg = b"NBD_OPT_STRUCTURED_REPLY takes no data";
            return self.reply(opt, rep::ERR_INVALID, msg).await;
        }
        self.structured = true;
        self.reply(opt, rep::ACK, &[]).await
    }

    /// Opens an export for an option that can fail politely; on failure
    /// sends the error reply and returns `None`.
    async fn open(&mut self, opt: u32, name: &str) -> io::Result<Option<Export>> {
        match self.provider.open(name) {
            Ok(e) => Ok(Some(e)),
            Err(e) => {
                let typ = match e.kind() {
                    ErrorKind::NotFound => rep::ERR_UNKNOWN,
                    ErrorKind::Shutdown => rep::ERR_SHUTDOWN,
                    _ => rep::ERR_POLICY,
                };
                let msg = format!("export {name:?}: {}", e.message());
                self.reply(
                    opt,
                    typ,
                    codec::clip_str(&msg, codec::MAX_STRING).as_bytes(),
                )
                .await?;
                Ok(None)
            }
        }
    }

    async fn info_go(&mut self, o: Opt, data: &[u8]) -> io::Result<Step> {
        let opt = o.to_wire();
        let req: InfoRequest = match codec::parse_info_request(data) {
            Ok(r) => r,
            Err(msg) => {
                self.reply(opt, rep::ERR_INVALID, msg.as_bytes()).await?;
                return Ok(None);
            }
        };
        let Some(export) = self.open(opt, &req.name).await? else {
            return Ok(None);
        };
        let neg = self.negotiated(&req.name, export);
        let flags = transmission_flags(neg.export.read_only, self.structured);
        let mut v = Vec::with_capacity(12);
        v.extend_from_slice(&info::EXPORT.to_be_bytes());
        v.extend_from_slice(&neg.size.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        self.reply(opt, rep::INFO, &v).await?;
        if req.infos.contains(&info::NAME) {
            let name = neg.export.name.clone();
            self.info_string(opt, info::NAME, &name).await?;
        }
        if req.infos.contains(&info::DESCRIPTION) && !neg.export.description.is_empty() {
            let desc = neg.export.description.clone();
            self.info_string(opt, info::DESCRIPTION, &desc).await?;
        }
        let sizes = BlockSizes::for_device(neg.export.dev.block_size(), self.max_payload);
        let mut v = Vec::with_capacity(14);
        v.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        for x in [sizes.min, sizes.preferred, sizes.max] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        self.reply(opt, rep::INFO, &v).await?;
        self.reply(opt, rep::ACK, &[]).await?;
        Ok(if o == Opt::Go { Some(Some(neg)) } else { None })
    }

    async fn info_string(&mut self, opt: u32, typ: u16, s: &str) -> io::Result<()> {
        let s = codec::clip_str(s, codec::MAX_STRING);
        let mut v = Vec::with_capacity(2 + s.len());
        v.extend_from_slice(&typ.to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        self.reply(opt, rep::INFO, &v).await
    }

    async fn meta_context(&mut self, o: Opt, data: &[u8]) -> io::Result<()> {
        let opt = o.to_wire();
        let set = o == Opt::SetMetaContext;
        if set {
            // SET replaces the selection even when it fails.
            self.meta_for = None;
            if !self.structured {
                let msg = b"structured replies must be negotiated first";
                return self.reply(opt, rep::ERR_INVALID, msg).await;
            }
        }
        let req: MetaRequest = match codec::parse_meta_request(data) {
            Ok(r) => r,
            Err(msg) => return self.reply(opt, rep::ERR_INVALID, msg.as_bytes()).await,
        };
        let Some(export) = self.open(opt, &req.name).await? else {
            return Ok(());
        };
        let names = if set {
            selected(&export, &req.queries)
        } else {
            listed(&export, &req.queries)
        };
        for (i, c) in names.iter().enumerate() {
            // LIST answers with id 0; SET's ids are 1, 2, ...
            let id = if set {
                u32::try_from(i + 1).unwrap_or(u32::MAX)
            } else {
                0
            };
            let mut v = id.to_be_bytes().to_vec();
            v.extend_from_slice(c.as_bytes());
            self.reply(opt, rep::META_CONTEXT, &v).await?;
        }
        self.reply(opt, rep::ACK, &[]).await?;
        if set && !names.is_empty() {
            self.meta_for = Some((req.name, names));
        }
        Ok(())
    }
}

/// The changed-block map an export offers under context name `c`.
fn bitmap(export: &Export, c: &str) -> Option<Arc<dyn ChangeMap>> {
    let name = c.strip_prefix(proto::META_DIRTY_PREFIX)?;
    export
        .bitmaps
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, m)| Arc::clone(m))
}

/// Every context name `export` offers.
fn offered(export: &Export) -> Vec<String> {
    let mut v = vec![proto::META_BASE_ALLOCATION.to_string()];
    v.extend(
        export
            .bitmaps
            .iter()
            .map(|(n, _)| format!("{}{n}", proto::META_DIRTY_PREFIX)),
    );
    v
}

/// SET: the queries that name a context the export offers, once each, in
/// the order asked.
fn selected(export: &Export, queries: &[String]) -> Vec<String> {
    let offered = offered(export);
    let mut out: Vec<String> = Vec::new();
    for q in queries {
        if offered.contains(q) && !out.contains(q) {
            out.push(q.clone());
        }
    }
    out
}

/// LIST: what the queries match (none: everything); a query ending in
/// `:` (`base:`, `qemu:`, `qemu:dirty-bitmap:`) matches every context it
/// begins.
fn listed(export: &Export, queries: &[String]) -> Vec<String> {
    offered(export)
        .into_iter()
        .filter(|c| {
            queries.is_empty()
                || queries
                    .iter()
                    .any(|q| q == c || (q.ends_with(':') && c.starts_with(q.as_str())))
        })
        .collect()
}
