//! The loaded BPF object: its programs attached to cgroups (by `bpf_link`, owned by this
//! process, so an exit or a crash detaches them) and its maps.
//!
//! Loader: aya. The userspace side is pure Rust (no libbpf, no C toolchain at run time) and it
//! reads the BTF-defined maps of a clang-built object directly and resolves its CO-RE
//! relocation (connect6's read of a socket's IPv6-only bit) against the kernel's BTF; the
//! program itself is plain C against the uapi headers, compiled by build.rs (see
//! docs/steering.md for the choice).

use std::collections::HashMap as StdHashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::cgroup_sock::CgroupSockLinkId;
use aya::programs::cgroup_sock_addr::CgroupSockAddrLinkId;
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};

use super::layout::{self, Addr, Pair, Route, Steered};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

const CONNECT4: &str = "steer_connect4";
/// connect6 that reads the socket's IPv6-only bit (CO-RE against the kernel's BTF, and
/// CAP_PERFMON for the typed socket pointer), so IPv6 clients reach IPv4 backends directly.
const CONNECT6: &str = "steer_connect6";
/// connect6 for when that one cannot load: IPv6 clients of IPv4 backends go to the proxy.
const CONNECT6_UNMAPPED: &str = "steer_connect6_unmapped";
const GETPEERNAME4: &str = "steer_getpeername4";
const GETPEERNAME6: &str = "steer_getpeername6";
/// The socket-address programs, attached in this order (getpeername before connect, so that no
/// steered socket ever shows the backend as its peer); connect6 is one of the two variants.
const SOCK_ADDR: [&str; 3] = [GETPEERNAME4, GETPEERNAME6, CONNECT4];
const RELEASE: &str = "steer_sock_release";
/// `BPF_NOEXIST`: create a counter only if it is not there (never reset a running count).
const NOEXIST: u64 = 1;

/// Why the program could not be loaded or attached; the text goes to `/status` and the log.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot load the steering program: {0}")]
    Load(String),
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot attach the steering program to cgroup {path}: {detail}")]
    Attach { path: PathBuf, detail: String },
    #[error("steering map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

/// The links of the programs on one cgroup.
struct Attachment {
    /// In the order of [`SOCK_ADDR`].
    sock_addr: Vec<(&'static str, CgroupSockAddrLinkId)>,
    release: CgroupSockLinkId,
}

pub struct Kernel {
    ebpf: Ebpf,
    /// The connect6 variant loaded ([`CONNECT6`] or [`CONNECT6_UNMAPPED`]).
    connect6: &'static str,
    /// Why IPv6 clients of IPv4 backends are proxied (the [`CONNECT6`] variant did not load).
    unmapped: Option<String>,
    routes: HashMap<MapData, Addr, Route>,
    steered: HashMap<MapData, u64, Steered>,
    totals: HashMap<MapData, Pair, u64>,
    attached: StdHashMap<PathBuf, Attachment>,
}

fn load_error(e: impl std::fmt::Display) -> KernelError {
    KernelError::Load(short(&e.to_string()))
}

/// An error with its sources (aya's messages name the syscall, the source says why).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The verifier's log is long: keep the first line and the verdict (its last lines).
fn short(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 6 {
        return text.to_string();
    }
    let verdict = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| {
            // Statistics, and the error's source that `chain` appended on a line of its own.
            !l.is_empty()
                && !l.starts_with(':')
                && !l.starts_with("verification time")
                && !l.starts_with("processed")
                && !l.starts_with("stack depth")
        })
        .unwrap_or("");
    format!("{} … {}", lines[0], verdict)
}

fn map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, KernelError> {
    let raw = ebpf
        .take_map(name)
        .ok_or_else(|| KernelError::Load(format!("the object has no map {name}")))?;
    HashMap::try_from(raw).map_err(|source| KernelError::Map { map: name, source })
}

/// Loads one socket-address program into the kernel.
fn load_sock_addr(ebpf: &mut Ebpf, name: &str) -> Result<(), KernelError> {
    let program: &mut CgroupSockAddr = ebpf
        .program_mut(name)
        .ok_or_else(|| load_error(format!("no program {name}")))?
        .try_into()
        .map_err(load_error)?;
    program.load().map_err(|e| load_error(chain(&e)))
}

/// The running kernel's BTF, which the CO-RE relocations of [`CONNECT6`] are resolved against.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Parses the object (creating its maps), with its CO-RE relocations resolved against the
/// kernel's BTF when there is one; without it, or if they fail, only [`CONNECT6`] is unusable
/// and the second value says why.
fn open_object() -> Result<(Ebpf, Option<String>), KernelError> {
    let why = if Path::new(KERNEL_BTF).exists() {
        // aya's default loader reads KERNEL_BTF and applies the relocations.
        match Ebpf::load(OBJECT) {
            Ok(ebpf) => return Ok((ebpf, None)),
            Err(e) => format!("CO-RE relocation or load failed: {}", short(&chain(&e))),
        }
    } else {
        format!("the kernel has no BTF ({KERNEL_BTF}, CONFIG_DEBUG_INFO_BTF)")
    };
    // Without relocations; a failure here (no capability) is not about BTF: it is the error.
    let ebpf = EbpfLoader::new()
        .btf(None)
        .load(OBJECT)
        .map_err(|e| load_error(chain(&e)))?;
    Ok((ebpf, Some(why)))
}

impl Kernel {
    /// Loads the object and its programs into the kernel (nothing is attached yet). connect6 is
    /// [`CONNECT6`] if the kernel accepts it, else [`CONNECT6_UNMAPPED`] (never a connect that
    /// an IPv6-only socket would fail).
    pub fn load() -> Result<Kernel, KernelError> {
        let (mut ebpf, mut unmapped) = open_object()?;
        for name in SOCK_ADDR {
            load_sock_addr(&mut ebpf, name)?;
        }
        if unmapped.is_none() {
            if let Err(e) = load_sock_addr(&mut ebpf, CONNECT6) {
                unmapped = Some(format!("{CONNECT6}: {e}"));
            }
        }
        let connect6 = match unmapped {
            None => CONNECT6,
            Some(_) => {
                load_sock_addr(&mut ebpf, CONNECT6_UNMAPPED)?;
                CONNECT6_UNMAPPED
            }
        };
        let release: &mut CgroupSock = ebpf
            .program_mut(RELEASE)
            .ok_or_else(|| load_error(format!("no program {RELEASE}")))?
            .try_into()
            .map_err(load_error)?;
        release.load().map_err(|e| load_error(chain(&e)))?;
        Ok(Kernel {
            routes: map(&mut ebpf, "routes")?,
            steered: map(&mut ebpf, "steered")?,
            totals: map(&mut ebpf, "steered_total")?,
            ebpf,
            connect6,
            unmapped,
            attached: StdHashMap::new(),
        })
    }

    /// Why an IPv6 client whose backend is IPv4 is proxied rather than steered; `None` when it
    /// is steered (unless its socket is IPv6-only, which the program reads per connect).
    pub fn unmapped(&self) -> Option<&str> {
        self.unmapped.as_deref()
    }

    /// Attaches the programs to `cgroup` (idempotent). By `bpf_link` (kernel 5.7+), which is
    /// always multi-attach: other programs on the cgroup (systemd's, another rolegate's) keep
    /// running. The kernel rejects any flag on a link, so the mode is aya's `Single` (0).
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), KernelError> {
        if self.attached.contains_key(cgroup) {
            return Ok(());
        }
        let dir = File::open(cgroup).map_err(|source| KernelError::Cgroup {
            path: cgroup.into(),
            source,
        })?;
        let attach_error = |e: aya::programs::ProgramError| KernelError::Attach {
            path: cgroup.into(),
            detail: chain(&e),
        };
        let mode = CgroupAttachMode::Single;
        // The release hook first, so no steered socket is ever left out of the map's cleanup.
        let release = self
            .sock(RELEASE)?
            .attach(&dir, mode)
            .map_err(attach_error)?;
        let mut attachment = Attachment {
            sock_addr: Vec::with_capacity(SOCK_ADDR.len() + 1),
            release,
        };
        for name in SOCK_ADDR.into_iter().chain([self.connect6]) {
            match self.sock_addr(name)?.attach(&dir, mode) {
                Ok(link) => attachment.sock_addr.push((name, link)),
                Err(e) => {
                    // Nothing half-attached stays behind.
                    self.undo(attachment);
                    return Err(attach_error(e));
                }
            }
        }
        self.attached.insert(cgroup.into(), attachment);
        Ok(())
    }

    /// Detaches the programs from a cgroup no listener names any more.
    pub fn detach(&mut self, cgroup: &Path) {
        if let Some(a) = self.attached.remove(cgroup) {
            self.undo(a);
        }
    }

    fn undo(&mut self, a: Attachment) {
        // Errors mean the link is gone already (the cgroup was removed): nothing to undo.
        for (name, link) in a.sock_addr {
            if let Ok(p) = self.sock_addr(name) {
                let _ = p.detach(link);
            }
        }
        if let Ok(p) = self.sock(RELEASE) {
            let _ = p.detach(a.release);
        }
    }

    pub fn attached(&self) -> impl Iterator<Item = &Path> {
        self.attached.keys().map(PathBuf::as_path)
    }

    fn sock_addr(&mut self, name: &str) -> Result<&mut CgroupSockAddr, KernelError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| load_error(format!("no program {name}")))?
            .try_into()
            .map_err(load_error)
    }

    fn sock(&mut self, name: &str) -> Result<&mut CgroupSock, KernelError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| load_error(format!("no program {name}")))?
            .try_into()
            .map_err(load_error)
    }

    /// Connects to `key` (a listener address) go to `backends` (round robin) from now on,
    /// counted for listener `id`; no backends: to the proxy.
    pub fn set_route(
        &mut self,
        key: SocketAddr,
        id: u32,
        backends: &[SocketAddr],
    ) -> Result<(), KernelError> {
        let map_error = |source| KernelError::Map {
            map: "routes",
            source,
        };
        let key = layout::addr(key);
        if backends.is_empty() {
            return match self.routes.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(source) => Err(map_error(source)),
            };
        }
        for b in backends {
            match self.totals.insert(layout::pair(id, *b), 0, NOEXIST) {
                Ok(()) => {}
                // EEXIST: the counter is running already.
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        map: "steered_total",
                        source,
                    })
                }
            }
        }
        self.routes
            .insert(key, layout::route(id, backends), 0)
            .map_err(map_error)
    }

    /// Live steered sockets: (cookie, listener id, address asked for, backend it went to).
    pub fn steered(&self) -> Vec<(u64, u32, SocketAddr, SocketAddr)> {
        self.steered
            .iter()
            .filter_map(Result::ok)
            .map(|(cookie, raw)| {
                let (id, asked, backend) = layout::from_steered(raw);
                (cookie, id, asked, backend)
            })
            .collect()
    }

    /// The steered socket with this cookie, if it is one: (listener id, backend).
    pub fn steered_socket(&self, cookie: u64) -> Option<(u32, SocketAddr)> {
        self.steered.get(&cookie, 0).ok().map(|raw| {
            let (id, _, backend) = layout::from_steered(raw);
            (id, backend)
        })
    }

    /// Closes the sockets steered to `backend` for listener `id` ([`super::fence`]).
    pub fn fence(&self, id: u32, backend: SocketAddr) -> std::io::Result<usize> {
        super::fence::fence(id, backend, |cookie| self.steered_socket(cookie))
    }

    /// Connections steered so far per (listener id, backend).
    pub fn totals(&self) -> Vec<(u32, SocketAddr, u64)> {
        self.totals
            .iter()
            .filter_map(Result::ok)
            .map(|(raw, n)| {
                let (id, backend) = layout::from_pair(raw);
                (id, backend, n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn a_verifier_log_is_cut_to_its_first_line_and_verdict() {
        // As `chain` renders aya's load error: the log, then its source on a line of its own.
        let log = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). \
                   Verifier output: 0: R1=ctx() R10=fp0\n\
                   1: (79) r1 = *(u64 *)(r6 +64)\n\
                   2: (85) call bpf_skc_to_tcp_sock#137\n\
                   program of this type cannot use helper bpf_skc_to_tcp_sock#137\n\
                   verification time 3100 usec\n\
                   stack depth 104\n\
                   processed 93 insns (limit 1000000)\n\
                   \n\
                   : Invalid argument (os error 22)";
        assert_eq!(
            short(log),
            "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier output: \
             0: R1=ctx() R10=fp0 … program of this type cannot use helper bpf_skc_to_tcp_sock#137"
        );
        assert_eq!(short("one line"), "one line");
    }
}
