// The command handlers the table points to (see command.hh for the contract).
#pragma once

#include "scsi/command.hh"

namespace zuma::scsi {

// SPC-5 (spc_commands.cc)
CmdResult handle_test_unit_ready(Cmd& c);
CmdResult handle_request_sense(Cmd& c);
CmdResult handle_inquiry(Cmd& c);
CmdResult handle_mode_sense(Cmd& c);
CmdResult handle_mode_select(Cmd& c);
CmdResult handle_report_luns(Cmd& c);
CmdResult handle_report_supported_opcodes(Cmd& c);

// SBC-4 (sbc_commands.cc)
CmdResult handle_read(Cmd& c);
CmdResult handle_write(Cmd& c);
CmdResult handle_verify(Cmd& c);
CmdResult handle_synchronize_cache(Cmd& c);
CmdResult handle_read_capacity10(Cmd& c);
CmdResult handle_read_capacity16(Cmd& c);
CmdResult handle_start_stop_unit(Cmd& c);

}  // namespace zuma::scsi
