// Names the calling thread so that `top -H`, `ps -L` and perf show what each of zumad's
// threads does (reactor/0, log/GROUP, link/LINK, apply/GROUP, ...). Linux keeps at most
// 15 bytes of a thread's name: a longer one is cut.
#pragma once
#include <pthread.h>
#include <string>

namespace zuma::storage {

inline void name_this_thread(std::string name) {
  if (name.size() > 15) name.resize(15);
  (void)pthread_setname_np(pthread_self(), name.c_str());
}

}  // namespace zuma::storage
