//! The kernel side of a build without the BPF toolchain (not Linux, no clang/libbpf-dev): it
//! never loads, so the type has no values and none of the other methods can run.

use std::net::SocketAddr;
use std::path::Path;

pub enum Kernel {}

impl Kernel {
    pub fn load() -> Result<Kernel, String> {
        Err(
            "rolegate was built without steering (no clang/libbpf-dev at build time, or not Linux)"
                .into(),
        )
    }

    pub fn attach(&mut self, _cgroup: &Path) -> Result<(), String> {
        match *self {}
    }

    pub fn detach(&mut self, _cgroup: &Path) {
        match *self {}
    }

    pub fn unmapped(&self) -> Option<&str> {
        match *self {}
    }

    pub fn attached(&self) -> std::iter::Empty<&Path> {
        match *self {}
    }

    pub fn set_route(&mut self, _: SocketAddr, _: u32, _: &[SocketAddr]) -> Result<(), String> {
        match *self {}
    }

    pub fn steered(&self) -> Vec<(u64, u32, SocketAddr, SocketAddr)> {
        match *self {}
    }

    pub fn totals(&self) -> Vec<(u32, SocketAddr, u64)> {
        match *self {}
    }

    pub fn fence(&self, _: u32, _: SocketAddr) -> std::io::Result<usize> {
        match *self {}
    }
}
