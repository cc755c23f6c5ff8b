//! Every call into a guest ends by its deadline, host calls included. Epoch interruption
//! stops a guest running wasm, but not one parked in a WASI call: a guest that sleeps
//! (`std::thread::sleep`, `poll_oneoff`) waits on a monotonic-clock pollable on the host.
//! Those are the only WASI calls that can block here (no sockets, no stdin, files are
//! local), so the monotonic clock's `subscribe-*` functions are replaced with ones whose
//! pollables fire no later than the current call's deadline. A sleep that would outlast
//! the deadline also moves the epoch deadline to now, so back in wasm (the adapter's
//! code between `subscribe` and `poll` included) the guest traps as timed out at once:
//! the call could not have ended in time, and its replica is free again.

use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as _;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::instance::HostState;

/// The interface whose sleeps are bounded, as `wasmtime-wasi` registers it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces `subscribe-duration` and `subscribe-instant` in `linker` (which already holds
/// WASI) with deadline-bounded ones.
pub fn bound_sleeps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut store, (nanos,): (u64,)| {
        let pollable = sleep(store.data_mut(), Duration::from_nanos(nanos))?;
        if store.data().overslept.is_some() {
            store.set_epoch_deadline(0);
        }
        Ok((pollable,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store, (when,): (u64,)| {
        let state: &mut HostState = store.data_mut();
        let now = state.clocks().now()?;
        let pollable = sleep(state, Duration::from_nanos(when.saturating_sub(now)))?;
        if store.data().overslept.is_some() {
            store.set_epoch_deadline(0);
        }
        Ok((pollable,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable ready after `wait`, or at the current call's deadline if that is sooner;
/// then the call cannot end in time, and `overslept` says so.
fn sleep(state: &mut HostState, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
    let now = Instant::now();
    let until = match now.checked_add(wait) {
        Some(t) if t <= state.deadline => t,
        _ => {
            state.overslept = Some(wait);
            state.deadline.max(now)
        }
    };
    let table = state.table();
    let until = table.push(Until(tokio::time::Instant::from_std(until)))?;
    subscribe(table, until)
}

/// Ready at an instant.
struct Until(tokio::time::Instant);

#[async_trait::async_trait]
impl Pollable for Until {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}
