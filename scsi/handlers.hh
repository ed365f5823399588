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
// SPC-5 reservations, ALUA, task management functions (spc_commands.cc)
CmdResult handle_reserve(Cmd& c);
CmdResult handle_release(Cmd& c);
CmdResult handle_persistent_reserve_in(Cmd& c);
CmdResult handle_persistent_reserve_out(Cmd& c);
CmdResult handle_report_target_port_groups(Cmd& c);
CmdResult handle_set_target_port_groups(Cmd& c);
CmdResult handle_report_supported_tmfs(Cmd& c);
// SPC-5 third-party copy (extended_copy.cc)
CmdResult handle_extended_copy(Cmd& c);
CmdResult handle_receive_copy_results(Cmd& c);

// SBC-4 (sbc_commands.cc)
CmdResult handle_read(Cmd& c);
CmdResult handle_write(Cmd& c);
CmdResult handle_verify(Cmd& c);
CmdResult handle_synchronize_cache(Cmd& c);
CmdResult handle_read_capacity10(Cmd& c);
CmdResult handle_read_capacity16(Cmd& c);
CmdResult handle_start_stop_unit(Cmd& c);
// SBC-4: atomic and verified writes, PRE-FETCH, READ DEFECT DATA (sbc_commands.cc)
CmdResult handle_write_atomic(Cmd& c);
CmdResult handle_write_and_verify(Cmd& c);
CmdResult handle_prefetch(Cmd& c);
CmdResult handle_read_defect_data(Cmd& c);
// SBC-4 logical block provisioning (thin.cc)
CmdResult handle_unmap(Cmd& c);
CmdResult handle_write_same(Cmd& c);
CmdResult handle_get_lba_status(Cmd& c);
// SBC-4 read-modify-write (compare_write.cc)
CmdResult handle_compare_and_write(Cmd& c);
CmdResult handle_orwrite(Cmd& c);
// SPC-5 LOG SENSE with the SBC-4 Logical Block Provisioning page (log_sense.cc)
CmdResult handle_log_sense(Cmd& c);

}  // namespace zuma::scsi
