#include "target/session.hh"

#include "scsi/logical_unit.hh"
#include "target/server.hh"

namespace zuma::target {

void end_session(Session& s, ServerContext& server) {
  if (s.ended) return;
  s.ended = true;
  if (!s.registered) return;  // a discovery session, or a login that never completed
  server.unregister_tsih(s.tsih);
  server.session_ended(s.key, s.tsih);
  // SAM-5: the I_T nexus is gone (SPC-2 reservations released, 29h/07h for its initiator
  // port's next nexus; PR registrations stay).
  if (s.luns)
    for (auto& [n, lu] : s.luns->luns)
      if (lu) scsi::nexus_lost(*lu, s.nexus);
}

}  // namespace zuma::target
