//! Sections → proxies: each `listen`, `frontend` and `backend` folded over the `defaults` in
//! force where it is written (the last one above it, or the one its `from NAME` names), with
//! `global`'s few translatable settings beside them. Proxies that cannot carry database
//! traffic (`mode http`, statistics pages) are noted once, at their header, and marked skipped.

use std::collections::HashMap;

use super::model::{noted, Noted};
use super::proxy::{self, At, Scope, Settings};
use super::reasons;
use super::sections::{Directive, Kind, Section};
use super::Notes;

/// Every proxy in file order, and the `global` settings.
pub(super) fn read<'a>(sections: &'a [Section], notes: &mut Notes) -> (Global, Vec<Proxy<'a>>) {
    let mut global = Global::default();
    let mut defaults = Settings::default();
    let mut named: HashMap<&str, Settings> = HashMap::new();
    let mut proxies: Vec<Proxy<'_>> = Vec::new();
    for section in sections {
        match &section.kind {
            Kind::Global => read_global(section, &mut global, notes),
            Kind::Defaults => {
                let mut s = base(section, &defaults, &named, notes);
                proxy::fold(&mut s, &section.body, Scope::Defaults, notes);
                if let Some(name) = section.name().filter(|n| *n != "from") {
                    named.insert(name, s.clone());
                }
                defaults = s;
            }
            Kind::Listen | Kind::Frontend | Kind::Backend => {
                proxies.push(read_proxy(section, &defaults, &named, notes));
            }
            Kind::Other(kind) => notes.add(
                section.header.line,
                format!(
                    "section {}: not translated; {}",
                    section.header.text(),
                    other_section(kind)
                ),
            ),
        }
    }
    (global, proxies)
}

/// A proxy section after folding.
pub(super) struct Proxy<'a> {
    pub section: &'a Section,
    pub settings: Settings,
    /// Why it is not translated (http mode, statistics page), already noted.
    pub skipped: bool,
}

impl Proxy<'_> {
    pub fn name(&self) -> &str {
        self.section.name().unwrap_or("")
    }
    pub fn label(&self) -> String {
        format!("{} {}", self.section.header.keyword(), self.name())
    }
}

/// `global` settings with a rolegate meaning.
#[derive(Default)]
pub(super) struct Global {
    pub maxconn: Option<At<u64>>,
    pub workers: Option<Noted<u32>>,
}

/// The settings a section starts from: its `from NAME` defaults, else the last `defaults`.
fn base(
    section: &Section,
    last: &Settings,
    named: &HashMap<&str, Settings>,
    notes: &mut Notes,
) -> Settings {
    let words = &section.header.words;
    let Some(i) = words.iter().position(|w| w == "from") else {
        return last.clone();
    };
    let name = words.get(i + 1).map_or("", String::as_str);
    named.get(name).cloned().unwrap_or_else(|| {
        notes.add(
            section.header.line,
            format!("defaults section {name:?} is not defined; the previous defaults apply"),
        );
        last.clone()
    })
}

fn read_global(section: &Section, global: &mut Global, notes: &mut Notes) {
    for d in &section.body {
        match (d.keyword(), d.arg(1).parse::<u64>()) {
            ("maxconn", Ok(n)) => {
                global.maxconn = Some(At {
                    value: n,
                    line: d.line,
                })
            }
            ("nbthread", Ok(n)) => match u32::try_from(n) {
                // rolegate's bound on workers; HAProxy allows more threads than that.
                Ok(n) if (1..=1024).contains(&n) => {
                    global.workers = Some(noted(n, format!("nbthread (line {})", d.line)))
                }
                _ => notes.add(
                    d.line,
                    "nbthread: rolegate runs 1 to 1024 workers; one per CPU applies",
                ),
            },
            (keyword, _) => notes.add(
                d.line,
                format!("global {keyword}: {}", reasons::global(keyword)),
            ),
        }
    }
}

fn other_section(kind: &str) -> &'static str {
    match kind {
        "resolvers" => "rolegate resolves backend host names with the system resolver again on every check",
        "userlist" => "rolegate's admin API authenticates POST requests with a bearer token (admin.token_file)",
        "peers" => "rolegate keeps no stick tables to share",
        "program" => "run other programs under systemd",
        "mailers" => "alert on rolegate's metrics instead",
        _ => "no rolegate equivalent",
    }
}

fn read_proxy<'a>(
    section: &'a Section,
    defaults: &Settings,
    named: &HashMap<&str, Settings>,
    notes: &mut Notes,
) -> Proxy<'a> {
    let scope = match section.kind {
        Kind::Listen => Scope::Listen,
        Kind::Frontend => Scope::Frontend,
        _ => Scope::Backend,
    };
    let mut settings = base(section, defaults, named, notes);
    // `listen NAME ADDRESS` (HAProxy 1.x) binds in the header.
    let header = &section.header;
    if scope != Scope::Backend && header.words.len() > 2 && header.arg(2) != "from" {
        settings.binds.push(Directive {
            line: header.line,
            words: vec!["bind".into(), header.arg(2).into()],
        });
    }
    proxy::fold(&mut settings, &section.body, scope, notes);
    let mut proxy = Proxy {
        section,
        settings,
        skipped: false,
    };
    let label = proxy.label();
    let http = proxy
        .settings
        .mode
        .as_ref()
        .is_some_and(|m| m.value == "http");
    let routes = !proxy.settings.servers.is_empty() || proxy.settings.default_backend.is_some();
    match proxy.settings.stats {
        // A TCP proxy with servers carries traffic; HAProxy ignores `stats` there.
        Some(line) if routes && !http => notes.add(
            line,
            format!(
                "stats in a TCP proxy has no effect in HAProxy either; {}",
                reasons::proxy("stats")
            ),
        ),
        Some(line) => {
            notes.add(
                header.line,
                format!(
                    "{label}: a statistics page (stats at line {line}); not translated: {}",
                    reasons::proxy("stats")
                ),
            );
            proxy.skipped = true;
            return proxy;
        }
        None => {}
    }
    if let Some(mode) = proxy.settings.mode.as_ref().filter(|m| m.value == "http") {
        notes.add(
            header.line,
            format!(
                "{label}: mode http (line {}); not translated: rolegate is a TCP proxy",
                mode.line
            ),
        );
        proxy.skipped = true;
    }
    proxy
}

pub(super) fn route_target<'p, 'a>(
    front: &Proxy<'a>,
    proxies: &'p [Proxy<'a>],
    notes: &mut Notes,
) -> Option<&'p Proxy<'a>> {
    let Some(target) = &front.settings.default_backend else {
        notes.add(
            front.section.header.line,
            format!(
                "{}: no default_backend (or unconditional use_backend); nothing to route to",
                front.label()
            ),
        );
        return None;
    };
    let found = proxies.iter().find(|p| {
        p.name() == target.value && matches!(p.section.kind, Kind::Backend | Kind::Listen)
    });
    match found {
        None => notes.add(
            target.line,
            format!("backend {:?} is not defined", target.value),
        ),
        Some(back) if back.skipped => notes.add(
            target.line,
            format!(
                "{}: routes to {}, which is not translated",
                front.label(),
                back.label()
            ),
        ),
        Some(back) => return Some(back),
    }
    None
}
