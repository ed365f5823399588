// The systemd readiness protocol (sd_notify(3)) without libsystemd: a datagram with
// "READY=1", "STOPPING=1", ... sent to the socket named by $NOTIFY_SOCKET (a path, or an
// abstract name when it starts with '@'). zumad uses it under Type=notify
// (dist/zumad.service).
#pragma once

#include <string_view>

namespace zuma::admin {

// Sends `state` (newline-separated VAR=VALUE assignments) to $NOTIFY_SOCKET. Returns 1
// when sent, 0 when $NOTIFY_SOCKET is unset (not run by systemd), -errno on failure.
// Any thread; synchronous (one sendto).
int notify_systemd(std::string_view state);

}  // namespace zuma::admin
