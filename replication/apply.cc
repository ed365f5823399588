#include "replication/apply.hh"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "storage/sync_io.hh"

namespace zuma::replication {

using storage::IoOp;
using storage::IoRequest;

thread_local bool ApplyScope::active_ = false;

std::string apply_record(storage::Backend& b, const RecordView& v) {
  if (is_marker(v.type)) return "";
  if (v.offset + v.length < v.offset || v.offset + v.length > b.size())
    return fmt::format("record {} (LU {}, offset {}, {} bytes) is beyond the LU's end", v.seq, v.lu, v.offset,
                       v.length);
  static const std::vector<uint8_t> zeros(1 << 20, 0);
  int r = 0;
  iovec iov{};
  if (v.type == RecordType::kWrite) {
    iov = {const_cast<uint8_t*>(v.payload.data()), v.payload.size()};
    IoRequest req{IoOp::kWrite, false, v.offset, v.length, &iov, 1};
    r = storage::submit_and_wait(b, req);
  } else {
    const IoOp op = v.type == RecordType::kDiscard ? IoOp::kDiscard : IoOp::kWriteZeroes;
    if (b.supports(op)) {
      IoRequest req{op, false, v.offset, v.length, nullptr, 0};
      r = storage::submit_and_wait(b, req);
    } else if (op == IoOp::kWriteZeroes) {
      for (uint64_t done = 0; done < v.length && r == 0;) {
        const uint64_t n = std::min<uint64_t>(v.length - done, zeros.size());
        iov = {const_cast<uint8_t*>(zeros.data()), n};
        IoRequest req{IoOp::kWrite, false, v.offset + done, n, &iov, 1};
        r = storage::submit_and_wait(b, req);
        done += n;
      }
    }
  }
  if (r < 0) return fmt::format("applying record {} to LU {}: {}", v.seq, v.lu, std::strerror(-r));
  return "";
}

}  // namespace zuma::replication
