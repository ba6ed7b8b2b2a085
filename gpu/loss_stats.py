"""The memory figures the loss scripts (gpt2_losses.py, model_losses.py, ddp_losses.py) store beside
their losses."""
import torch


def allocator_stats(mode):
    """Peaks of the run's allocator; under nofrag also its remaps, calls, the time spent in those calls
    and cap, after checking every pool's invariants (nofrag.check_pools raises if one is broken)."""
    if mode != "nofrag":
        return {"allocated_bytes.all.peak": torch.cuda.max_memory_allocated(),
                "reserved_bytes.all.peak": torch.cuda.max_memory_reserved()}
    import nofrag
    st = nofrag.stats()
    nofrag.check_pools()
    return {k: st[k] for k in ("allocated_bytes.all.peak", "reserved_bytes.all.peak", "num_remaps",
                               "backend_calls", "num_ooms", "overhead_ratio", "capacity_bytes",
                               "calls_event_sync", "calls_stream_wait", "backend_ns",
                               "event_wait_ns", "num_pairs_made")}
