// Task attributes (SIMPLE, ORDERED, HEAD OF QUEUE) in execution order, and aborts: what a
// task reports when a task management function or another nexus aborts it.
#include "scsi/task_set.hh"

#include <doctest/doctest.h>

#include "scsi/cdb.hh"
#include "scsi_test_util.hh"

namespace zuma::scsi {
namespace {

using test::Bytes;
using test::cdb10;
using test::Fixture;

// Runs a CDB with a task attribute.
std::unique_ptr<test::TestTask> run_attr(Fixture& f, const Bytes& cdb, TaskAttr attr,
                                         DataDir dir = DataDir::kIn, uint32_t len = 512,
                                         const Bytes& out = {}, const Nexus* n = nullptr) {
  auto t = std::make_unique<test::TestTask>();
  std::copy(cdb.begin(), cdb.end(), t->task.cdb.begin());
  t->task.cdb_len = 16;
  t->task.attr = attr;
  t->task.dir = dir;
  t->task.expected_len = len;
  t->task.nexus = n ? n : &f.nexus;
  if (!out.empty()) {
    t->task.data.resize(out.size());
    std::memcpy(t->task.data.data(), out.data(), out.size());
  }
  execute(f.table, t->task);
  return t;
}

const Bytes kTur = {op::kTestUnitReady, 0, 0, 0, 0, 0};

TEST_CASE("SIMPLE tasks run at once") {
  Fixture f;
  f.backend->defer = true;
  auto a = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto b = run_attr(f, cdb10(op::kRead10, 0, 1, 1), TaskAttr::kSimple);
  CHECK(f.backend->deferred.size() == 2);
  f.backend->complete_deferred();
  CHECK(a->good());
  CHECK(b->good());
}

TEST_CASE("ORDERED waits for older tasks; younger SIMPLE tasks wait for it") {
  Fixture f;
  f.backend->defer = true;
  auto a = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto o = run_attr(f, cdb10(op::kWrite10, 0, 0, 1), TaskAttr::kOrdered, DataDir::kOut, 512,
                    Bytes(512, 7));
  auto b = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  CHECK(f.backend->calls.size() == 1);  // only the first read started
  CHECK(o->completions == 0);
  CHECK(b->completions == 0);
  CHECK(f.lu->task_set_of(f.nexus).size() == 3);
  f.backend->complete_deferred();  // the read: the ORDERED write starts
  CHECK(a->good());
  CHECK(b->completions == 0);
  REQUIRE(f.backend->calls.size() == 2);
  CHECK(f.backend->calls[1].op == storage::IoOp::kWrite);
  f.backend->complete_deferred();  // the write: the TEST UNIT READY runs
  CHECK(o->good());
  CHECK(b->good());
  CHECK(f.lu->task_set_of(f.nexus).size() == 0);
}

TEST_CASE("HEAD OF QUEUE does not wait; an ORDERED task waits for it") {
  Fixture f;
  f.backend->defer = true;
  auto o = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kOrdered);
  auto s = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  auto h = run_attr(f, kTur, TaskAttr::kHeadOfQueue, DataDir::kNone, 0);
  CHECK(h->good());
  CHECK(s->completions == 0);
  auto h2 = run_attr(f, cdb10(op::kRead10, 0, 1, 1), TaskAttr::kHeadOfQueue);
  auto o2 = run_attr(f, kTur, TaskAttr::kOrdered, DataDir::kNone, 0);
  CHECK(f.backend->deferred.size() == 2);
  f.backend->complete_deferred();
  CHECK(o->good());
  CHECK(h2->good());
  CHECK(s->good());
  CHECK(o2->good());
}

TEST_CASE("each I_T nexus has its own task set (TST=001b)") {
  Fixture f;
  f.backend->defer = true;
  auto o = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kOrdered);
  auto s = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  auto other = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &f.other);
  CHECK(other->good());
  CHECK(s->completions == 0);
  f.backend->complete_deferred();
  CHECK(s->good());
}

TEST_CASE("a long chain of waiting tasks starts without deep recursion") {
  Fixture f;
  f.backend->defer = true;
  auto first = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  std::vector<std::unique_ptr<test::TestTask>> v;
  for (int i = 0; i < 2000; ++i)
    v.push_back(run_attr(f, kTur, TaskAttr::kOrdered, DataDir::kNone, 0));
  f.backend->complete_deferred();
  for (auto& t : v) CHECK(t->good());
}

TEST_CASE("abort_task_set: running tasks end without a response, waiting ones without running") {
  Fixture f;
  f.backend->defer = true;
  auto w = run_attr(f, cdb10(op::kWrite10, 0, 0, 1), TaskAttr::kSimple, DataDir::kOut, 512,
                    Bytes(512, 3));
  auto waiting = run_attr(f, cdb10(op::kWrite10, 0, 1, 1), TaskAttr::kOrdered, DataDir::kOut, 512,
                          Bytes(512, 4));
  bool done = false;
  abort_task_set(*f.lu, &f.nexus, f.nexus, [&] { done = true; });
  CHECK_FALSE(done);
  f.backend->complete_deferred();
  CHECK(done);
  CHECK(w->completions == 1);
  CHECK(w->task.aborted);
  CHECK(waiting->completions == 1);
  CHECK(waiting->task.aborted);
  CHECK(f.backend->calls.size() == 1);  // the waiting write never reached the backend
  // Own tasks (ABORT TASK SET): nothing reported, whatever TAS says.
  CHECK(w->task.status == status::kTaskAborted);
  CHECK_FALSE(w->task.report_abort);
  // New tasks are not affected.
  auto after = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  CHECK(after->good());
  CHECK_FALSE(after->task.aborted);
  CHECK_FALSE(after->task.report_abort);
}

TEST_CASE("abort_task_set with no tasks calls done at once") {
  Fixture f;
  bool done = false;
  abort_task_set(*f.lu, nullptr, f.nexus, [&] { done = true; });
  CHECK(done);
}

TEST_CASE("LU reset aborts other nexuses' tasks; TAS decides what they report") {
  for (bool tas : {false, true}) {
    CAPTURE(tas);
    Fixture f;
    {
      std::lock_guard lock(f.lu->mode_mutex());
      f.lu->set_mode_params({true, false, tas}, 0);
    }
    f.backend->defer = true;
    auto r = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple, DataDir::kIn, 512, {},
                      &f.other);
    reset_logical_unit(*f.lu, f.nexus);
    f.backend->complete_deferred();
    CHECK(r->completions == 1);
    CHECK(r->task.aborted);
    CHECK(r->task.status == status::kTaskAborted);
    CHECK(r->task.report_abort == tas);
    CHECK(r->task.data_in_len == 0);
    CHECK(r->task.sense_len == 0);
  }
}

TEST_CASE("LU reset: done waits for every nexus's aborted tasks; 29h/03h for every nexus") {
  Fixture f;
  f.backend->defer = true;
  auto own = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto theirs =
      run_attr(f, cdb10(op::kRead10, 0, 1, 1), TaskAttr::kSimple, DataDir::kIn, 512, {}, &f.other);
  auto waiting = run_attr(f, kTur, TaskAttr::kOrdered, DataDir::kNone, 0, {}, &f.other);
  int done = 0;
  reset_logical_unit(*f.lu, f.nexus, [&] { ++done; });
  CHECK(done == 0);
  REQUIRE(f.backend->deferred.size() == 2);
  f.backend->complete_deferred();
  CHECK(done == 1);
  CHECK(own->task.aborted);
  CHECK_FALSE(own->task.report_abort);  // the TMF response answers for the sender's tasks
  CHECK(theirs->task.aborted);
  CHECK(theirs->task.report_abort);  // TAS=1 by default
  CHECK(waiting->task.aborted);
  CHECK(waiting->completions == 1);
  auto t = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  CHECK_SENSE(t, 0x6, 0x29, 0x03);
  t = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &f.other);
  CHECK_SENSE(t, 0x6, 0x29, 0x03);
  CHECK(run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &f.other)->good());
  // No task anywhere: done at once.
  done = 0;
  reset_logical_unit(*f.lu, f.nexus, [&] { ++done; });
  CHECK(done == 1);
}

TEST_CASE("TAS=0: tasks aborted by another nexus end silently, and their nexus learns 2Fh/00h") {
  Fixture f;
  {
    std::lock_guard lock(f.lu->mode_mutex());
    f.lu->set_mode_params({true, false, false}, 0);
  }
  f.backend->defer = true;
  auto r =
      run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple, DataDir::kIn, 512, {}, &f.other);
  bool done = false;
  abort_task_set(*f.lu, &f.other, f.nexus, [&] { done = true; });
  f.backend->complete_deferred();
  CHECK(done);
  CHECK(r->task.aborted);
  CHECK_FALSE(r->task.report_abort);
  auto t = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &f.other);
  CHECK_SENSE(t, 0x6, 0x2F, 0x00);
  CHECK(run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &f.other)->good());
  // The nexus that asked gets nothing; nor does one whose own tasks it aborted itself.
  CHECK(run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0)->good());
  auto own = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  abort_task_set(*f.lu, &f.nexus, f.nexus);
  f.backend->complete_deferred();
  CHECK(own->task.aborted);
  CHECK(run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0)->good());
  // With TAS=1 (the default) there is no unit attention: the task reported TASK ABORTED.
  Fixture g;
  g.backend->defer = true;
  r = run_attr(g, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple, DataDir::kIn, 512, {}, &g.other);
  abort_task_set(*g.lu, &g.other, g.nexus);
  g.backend->complete_deferred();
  CHECK(r->task.report_abort);
  CHECK(run_attr(g, kTur, TaskAttr::kSimple, DataDir::kNone, 0, {}, &g.other)->good());
}

TEST_CASE("abort_task: a task waiting in its set ends without running") {
  Fixture f;
  f.backend->defer = true;
  auto a = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto w = run_attr(f, cdb10(op::kWrite10, 0, 5, 1), TaskAttr::kOrdered, DataDir::kOut, 512,
                    Bytes(512, 9));
  CHECK(abort_task(w->task));
  f.backend->complete_deferred();
  CHECK(a->good());
  CHECK(w->completions == 1);
  CHECK(w->task.aborted);
  CHECK_FALSE(w->task.report_abort);
  CHECK(f.backend->calls.size() == 1);  // the write never reached the backend
}

TEST_CASE("abort_task aborts one task") {
  Fixture f;
  f.backend->defer = true;
  auto a = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto b = run_attr(f, cdb10(op::kRead10, 0, 1, 1), TaskAttr::kSimple);
  CHECK(abort_task(a->task));
  f.backend->complete_deferred();
  CHECK(a->task.aborted);
  CHECK_FALSE(b->task.aborted);
  CHECK(b->good());
  CHECK_FALSE(abort_task(b->task));  // completed: not in the device server any more
}

TEST_CASE("a lost nexus's waiting tasks still complete") {
  Fixture f;
  f.backend->defer = true;
  auto a = run_attr(f, cdb10(op::kRead10, 0, 0, 1), TaskAttr::kSimple);
  auto o = run_attr(f, kTur, TaskAttr::kOrdered, DataDir::kNone, 0);
  nexus_lost(*f.lu, f.nexus);
  f.backend->complete_deferred();
  CHECK(a->completions == 1);
  CHECK(o->completions == 1);
  // The nexus gets a new task set if it is used again; its first command reports the loss.
  auto t = run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0);
  CHECK_SENSE(t, 0x6, 0x29, 0x07);
  CHECK(run_attr(f, kTur, TaskAttr::kSimple, DataDir::kNone, 0)->good());
}

TEST_CASE("AbortWaiter counts down once") {
  int fired = 0;
  auto w = std::make_shared<AbortWaiter>([&] { ++fired; });
  w->add(2);
  w->release();
  CHECK(fired == 0);
  w->release();
  CHECK(fired == 0);
  w->release();
  CHECK(fired == 1);
}

TEST_CASE("a nexus's first command reports POWER ON OCCURRED when asked to") {
  LuParams p = test::default_params();
  p.power_on_unit_attention = true;
  Fixture f(p);
  auto t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0);
  CHECK_SENSE(t, 0x6, 0x29, 0x01);
  CHECK(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0)->good());
  // INQUIRY does not report it, and does not clear it (SAM-5).
  auto i = f.run({op::kInquiry, 0, 0, 0, 96, 0}, DataDir::kIn, 96, {}, 0, &f.other);
  CHECK(i->good());
  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK_SENSE(t, 0x6, 0x29, 0x01);
  // A nexus lost and back (a new session, same names) gets I_T NEXUS LOSS OCCURRED instead
  // (SAM-5); a new ISID is a new I_T nexus: POWER ON OCCURRED.
  nexus_lost(*f.lu, f.other);
  Nexus again = f.other;
  again.id = 77;
  again.task_sets.clear();
  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &again);
  CHECK_SENSE(t, 0x6, 0x29, 0x07);
  Nexus new_isid = f.other;
  new_isid.id = 78;
  new_isid.task_sets.clear();
  new_isid.initiator_port += "2";
  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &new_isid);
  CHECK_SENSE(t, 0x6, 0x29, 0x01);
}

TEST_CASE("REPORTED LUNS DATA HAS CHANGED for every nexus of the table's LUs") {
  Fixture f;
  REQUIRE(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0)->good());
  REQUIRE(f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other)->good());
  reported_luns_changed(f.table);
  auto t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0);
  CHECK_SENSE(t, 0x6, 0x3F, 0x0E);
  t = f.run({op::kTestUnitReady, 0, 0, 0, 0, 0}, DataDir::kNone, 0, {}, 0, &f.other);
  CHECK_SENSE(t, 0x6, 0x3F, 0x0E);
}

}  // namespace
}  // namespace zuma::scsi
