#include "scsi/range_lock.hh"

#include <thread>

namespace zuma::scsi {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

bool overlaps(const RangeLock::Holder& a, const RangeLock::Holder& b) {
  return a.begin < b.end && b.begin < a.end;
}

}  // namespace

void RangeLock::List::push_back(Holder* h) {
  h->next = nullptr;
  h->prev = tail;
  if (tail) {
    tail->next = h;
  } else {
    head = h;
  }
  tail = h;
  ++size;
}

void RangeLock::List::remove(Holder* h) {
  if (h->prev) {
    h->prev->next = h->next;
  } else {
    head = h->next;
  }
  if (h->next) {
    h->next->prev = h->prev;
  } else {
    tail = h->prev;
  }
  h->prev = h->next = nullptr;
  --size;
}

void RangeLock::lock() const {
  // Test and test-and-set; the critical sections are a few list operations. After a
  // while, yield: the holder may have been preempted.
  for (unsigned spins = 0; spin_.exchange(true, std::memory_order_acquire); ++spins) {
    while (spin_.load(std::memory_order_relaxed)) {
      if (++spins < 1024) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

void RangeLock::unlock() const {
  spin_.store(false, std::memory_order_release);
}

bool RangeLock::can_grant(const Holder& h, const Holder* stop) const {
  for (const Holder* x = exclusive_.head; x; x = x->next) {
    if (overlaps(h, *x)) return false;
  }
  if (h.mode == Mode::kExclusive) {
    for (const Holder* x = shared_.head; x; x = x->next) {
      if (overlaps(h, *x)) return false;
    }
  }
  // First come, first served among overlapping requests: a shared request waits behind an
  // earlier exclusive one, an exclusive request behind any earlier one.
  if (h.mode == Mode::kShared && exclusive_waiters_ == 0) return true;
  for (const Holder* w = waiters_.head; w && w != stop; w = w->next) {
    if ((h.mode == Mode::kExclusive || w->mode == Mode::kExclusive) && overlaps(h, *w)) {
      return false;
    }
  }
  return true;
}

bool RangeLock::acquire(Holder& h, uint64_t lba, uint64_t blocks, Mode mode,
                        void (*on_grant)(void*), void* arg) {
  h.begin = lba;
  h.end = lba + blocks < lba ? ~uint64_t{0} : lba + blocks;  // ranges are checked; be safe
  h.mode = mode;
  h.post.next = nullptr;
  h.post.run = on_grant;
  h.post.arg = arg;
  lock();
  if (can_grant(h, nullptr)) {
    h.granted = true;
    held_list(mode).push_back(&h);
    unlock();
    return true;
  }
  h.granted = false;
  h.home = storage::IoContext::current();
  waiters_.push_back(&h);
  if (mode == Mode::kExclusive) ++exclusive_waiters_;
  unlock();
  return false;
}

void RangeLock::release(Holder& h) {
  lock();
  held_list(h.mode).remove(&h);
  h.granted = false;
  Holder* granted = nullptr;
  Holder** tail = &granted;
  for (Holder* w = waiters_.head; w;) {
    Holder* next = w->next;
    if (can_grant(*w, w)) {
      waiters_.remove(w);
      if (w->mode == Mode::kExclusive) --exclusive_waiters_;
      w->granted = true;
      held_list(w->mode).push_back(w);
      w->grant_next = nullptr;
      *tail = w;
      tail = &w->grant_next;
    }
    w = next;
  }
  unlock();
  // Outside the spinlock: on_grant may run inline and take the lock again. Read each
  // holder's successor before handing it over: it may be released and reused at once.
  for (Holder* g = granted; g;) {
    Holder* next = g->grant_next;
    if (g->home) {
      g->home->post(g->post);
    } else {
      g->post.run(g->post.arg);
    }
    g = next;
  }
}

size_t RangeLock::held() const {
  lock();
  const size_t n = shared_.size + exclusive_.size;
  unlock();
  return n;
}

size_t RangeLock::waiting() const {
  lock();
  const size_t n = waiters_.size;
  unlock();
  return n;
}

}  // namespace zuma::scsi
