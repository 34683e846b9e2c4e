//! The record encoder: a finished call's JSON line written straight from
//! its [`CallRecord`], copying the pre-rendered pieces of its config, its
//! context and its call site (rendered once per site per thread).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::context::AuditContext;
use crate::json::encode::{
    action, actor, id_and_time, metadata_and_close, outcome, rendered, resource_ids, resource_type,
};
use crate::model::event::Action;
use crate::record::{CallRecord, CallSite};
use crate::util::text::Text;

/// `,"action":{..},"resource":{"type":..` of a call site.
fn site(out: &mut Vec<u8>, site: &CallSite) {
    action(
        out,
        &Action {
            kind: site.action,
            name: Some(Text::from_static(site.name)),
            phi_touched: site.phi_touched,
            data_classification: site.classification,
        },
    );
    resource_type(out, site.resource);
}

/// Copies the rendered [`site`] of `s` to `out`, rendering it the first
/// time this thread sees the site (call sites are statics: their address is
/// their identity, for the life of the program).
fn site_cached(out: &mut Vec<u8>, s: &'static CallSite) {
    thread_local! {
        static SITES: RefCell<SiteCache> = RefCell::new(SiteCache::default());
    }
    let hit = SITES.try_with(|c| {
        let mut c = c.borrow_mut();
        let key = s as *const CallSite as usize;
        // Calls come in runs from one site: try the last one first.
        if c.last.0 != key {
            let frag = c
                .map
                .entry(key)
                .or_insert_with(|| Rc::from(rendered(|o| site(o, s))))
                .clone();
            c.last = (key, frag);
        }
        out.extend_from_slice(&c.last.1);
    });
    if hit.is_err() {
        site(out, s);
    }
}

/// Rendered call sites by address.
#[derive(Default)]
struct SiteCache {
    map: HashMap<usize, Rc<[u8]>, BuildHasherDefault<AddrHasher>>,
    last: (usize, Rc<[u8]>),
}

/// Hashes a static's address: spread the bits a multiply mixes well.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// Appends the compact JSON of a finished call: what
/// `encode::event(record.into_event())` writes, for a record that
/// `writes_as_is`. The constant parts are copied pre-rendered.
pub(crate) fn record(out: &mut Vec<u8>, r: &CallRecord) {
    out.reserve(768);
    out.extend_from_slice(b"{\"schema_version\":\"1.1\"");
    let config = r.config.get();
    id_and_time(out, &config.new_event_id(), r.started);
    let cfg = config.inner();
    out.extend_from_slice(&cfg.fragments.service);
    // The context's parts: kept rendered once it was used before, else
    // written from its fields (see `AuditContext::fragments`).
    let ctx = r.context.as_ref();
    let frags = ctx.and_then(AuditContext::fragments);
    let wrote_actor = match (&r.actor, frags, ctx) {
        (Some(a), _, _) => {
            actor(out, a);
            true
        }
        (None, Some(f), _) => match f.actor() {
            Some(a) => {
                out.extend_from_slice(a);
                true
            }
            None => false,
        },
        (None, None, Some(c)) => c.write_actor(out),
        (None, None, None) => false,
    };
    if !wrote_actor {
        out.extend_from_slice(&cfg.fragments.default_actor);
    }
    site_cached(out, r.site);
    resource_ids(out, &r.resource_id, &r.patient_id);
    outcome(out, &r.outcome);
    match (frags, ctx) {
        (Some(f), _) => out.extend_from_slice(f.tail()),
        (None, Some(c)) => c.write_tail(out),
        (None, None) => {}
    }
    metadata_and_close(out, &r.metadata);
}
