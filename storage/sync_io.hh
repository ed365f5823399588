// One I/O on a backend, waited for: from a thread without a reactor (startup, the control
// and job threads, replication's apply, snapshot metadata), where backends complete inline
// or from a thread of their own, or from a reactor thread, whose ring is driven meanwhile.
#pragma once
#include <cstdint>

#include "storage/backend.hh"

namespace zuma::storage {

// Submits `req` (its `user` and `done` are taken over) and waits for its completion.
// Returns 0 or -errno.
int submit_and_wait(Backend& b, IoRequest& req);

// A read, write or flush of `len` bytes at `offset` from or into `buf` (nullptr for a
// flush), through submit_and_wait. Returns 0 or -errno.
int sync_io(Backend& b, IoOp op, uint64_t offset, void* buf, uint64_t len, bool fua = false);

}  // namespace zuma::storage
