// zumactl: the Zuma admin shell. A thin main (STYLE.md 12): the command table, protocol
// and formatting live in admin/.
//
//   zumactl                      interactive shell (history, TAB completion, help)
//   zumactl VERB ARGS...         one command, then exit
//   zumactl --json VERB ARGS...  the result as JSON (for scripts)
//
// Exit codes (docs/ADMIN.md): 0 ok, 1 the command failed, 2 usage error, 3 cannot connect
// to zumad, 4 the connection broke or zumad answered nonsense.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <optional>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <editline/readline.h>

#include "admin/command_table.hh"
#include "admin/format.hh"
#include "admin/progress.hh"
#include "admin/protocol.hh"
#include "config/config.hh"

namespace {

using namespace zuma;
using admin::Json;

enum Exit { kOk = 0, kFailed = 1, kUsage = 2, kNoConnect = 3, kBroken = 4 };

constexpr const char* kDefaultSocket = "./var/zumad.sock";

const char* kUsageText =
    "usage: zumactl [--socket PATH | -c CONFIG] [--json] [--watch SECONDS] [VERB ARGS...]\n"
    "  no VERB: interactive shell; 'zumactl help' lists the verbs.\n"
    "  --socket PATH   zumad's control socket (default: $ZUMA_CONTROL_SOCKET, else "
    "./var/zumad.sock)\n"
    "  -c, --config F  take the socket path from zumad's configuration file\n"
    "  --json          print results as JSON\n"
    "  --watch N       repeat the command every N seconds (show verbs), until Ctrl-C\n"
    "exit codes: 0 ok, 1 command failed, 2 usage, 3 cannot connect, 4 connection broken\n";

volatile std::sig_atomic_t g_interrupted = 0;  // Ctrl-C while watching a job

struct Shell {
  admin::CommandTable table = admin::standard_table();
  std::string socket;
  bool json = false;
  std::optional<admin::Client> client;

  // Connects if needed. Prints why not and returns false on failure.
  bool connect() {
    if (client) return true;
    auto c = admin::Client::connect(socket);
    if (!c) {
      std::fprintf(stderr, "zumactl: %s (is zumad running? give --socket PATH)\n",
                   c.error().c_str());
      return false;
    }
    client = std::move(*c);
    return true;
  }

  // Runs one command given as words. Returns the exit code.
  int run(std::vector<std::string> words) {
    // `help add lun`: the verb may be several words.
    if (words.size() > 2 && words[0] == "help") {
      std::string verb;
      for (size_t i = 1; i < words.size(); ++i) verb += (i > 1 ? " " : "") + words[i];
      words = {"help", verb};
    }
    auto parsed = table.parse(words);
    if (!parsed) {
      if (json)
        std::printf("%s\n", admin::make_error(parsed.error()).c_str());
      else
        std::fprintf(stderr, "error: %s\n", parsed.error().c_str());
      return kUsage;
    }
    auto& [cmd, args] = *parsed;
    if (cmd->name == "help") {
      const std::string verb = args.value("verb", std::string());
      std::string text = verb.empty() ? table.help() : table.help(verb);
      if (text.empty()) {
        std::fprintf(stderr, "error: no command '%s'; try 'help'\n", verb.c_str());
        return kUsage;
      }
      std::fputs(text.c_str(), stdout);
      return kOk;
    }
    if (cmd->name == "quit") return kOk;
    if (!connect()) return kNoConnect;
    if (cmd->name == "watch job") return watch_job(args["job"].get<uint64_t>());
    auto reply = client->call(cmd->name, args);
    if (!reply) {
      client.reset();  // reconnect next time
      std::fprintf(stderr, "zumactl: %s\n", reply.error().c_str());
      return kBroken;
    }
    // A long operation started: follow it unless asked not to (scripts poll `show job`).
    const bool follow = reply->ok && !json && reply->result.is_object() &&
                        reply->result.contains("job") && !args.value("background", false);
    if (json) {
      std::printf("%s\n", reply->ok ? reply->result.dump(2).c_str()
                                    : admin::make_error(reply->error).c_str());
    } else if (follow) {
      std::printf("%s\n", reply->result.value("message", std::string()).c_str());
    } else if (reply->ok) {
      std::fputs(admin::render(reply->result).c_str(), stdout);
    } else {
      std::fprintf(stderr, "error: %s\n", reply->error.c_str());
    }
    std::fflush(stdout);
    if (follow) return watch_job(reply->result["job"].get<uint64_t>());
    return reply->ok ? kOk : kFailed;
  }

  // Draws job `id`'s progress bar until it ends or Ctrl-C, which leaves it running.
  int watch_job(uint64_t id) {
    g_interrupted = 0;
    struct sigaction sa {}, old {};
    sa.sa_handler = [](int) { g_interrupted = 1; };
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old);
    std::optional<admin::ProgressBar> bar;
    int rc = kOk;
    for (;;) {
      auto reply = client->call("show job", Json{{"job", id}});
      if (!reply) {
        client.reset();
        std::fprintf(stderr, "zumactl: %s\n", reply.error().c_str());
        rc = kBroken;
        break;
      }
      if (!reply->ok) {
        std::fprintf(stderr, "error: %s\n", reply->error.c_str());
        rc = kFailed;
        break;
      }
      const Json& j = reply->result;
      const std::string state = j["state"];
      if (!json && !bar)
        bar.emplace(j["kind"].get<std::string>() + " " + j["what"].get<std::string>(),
                    j["total"].get<uint64_t>(), stdout);
      if (bar) bar->update(j["done"].get<uint64_t>());
      if (state != "running") {
        if (bar) bar->finish();
        if (json) {
          std::printf("%s\n", j.dump(2).c_str());
        } else if (state == "done") {
          std::printf("job %llu done: %s in %.1f s\n", static_cast<unsigned long long>(id),
                      admin::human_bytes(j["total"].get<double>()).c_str(),
                      j["seconds"].get<double>());
        } else if (state == "failed") {
          std::fprintf(stderr, "error: job %llu failed: %s\n",
                       static_cast<unsigned long long>(id),
                       j.value("error", std::string("?")).c_str());
        } else {
          std::printf("job %llu %s\n", static_cast<unsigned long long>(id), state.c_str());
        }
        rc = state == "done" ? kOk : kFailed;
        break;
      }
      if (g_interrupted) {
        if (bar) std::printf("\n");
        std::printf("job %llu goes on in the background: 'watch job %llu' follows it, "
                    "'cancel job %llu' stops it\n",
                    static_cast<unsigned long long>(id), static_cast<unsigned long long>(id),
                    static_cast<unsigned long long>(id));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::fflush(stdout);
    ::sigaction(SIGINT, &old, nullptr);
    return rc;
  }

  std::vector<std::string> names(const std::string& source) {
    if (!connect()) return {};
    auto r = client->call("complete", Json{{"source", source}}, std::chrono::seconds(5));
    if (!r || !r->ok || !r->result.is_array()) return {};
    std::vector<std::string> out;
    for (auto& v : r->result)
      if (v.is_string()) out.push_back(v.get<std::string>());
    return out;
  }
};

Shell* g_shell = nullptr;
std::vector<std::string> g_matches;

char* next_match(const char*, int state) {
  static size_t i;
  if (state == 0) i = 0;
  return i < g_matches.size() ? strdup(g_matches[i++].c_str()) : nullptr;
}

char** complete(const char* text, int start, int) {
  rl_attempted_completion_over = 1;  // never fall back to file names
  const std::string before(rl_line_buffer, size_t(start));
  auto words = admin::split_words(before);
  if (!words) return nullptr;
  g_matches =
      g_shell->table.complete(*words, text, [](const std::string& s) { return g_shell->names(s); });
  if (g_matches.empty()) return nullptr;
  return rl_completion_matches(text, next_match);
}

int repl(Shell& sh) {
  if (!sh.connect()) return kNoConnect;
  g_shell = &sh;
  rl_readline_name = "zumactl";
  rl_attempted_completion_function = complete;
  using_history();
  std::string hist;
  if (const char* home = std::getenv("HOME")) {
    hist = std::string(home) + "/.zumactl_history";
    read_history(hist.c_str());
  }
  const bool tty = ::isatty(STDIN_FILENO);
  if (tty)
    std::printf("zumactl: connected to %s. 'help' lists the commands, TAB completes.\n",
                sh.socket.c_str());
  int last = kOk;
  for (;;) {
    char* raw = readline("zumactl> ");
    if (!raw) {
      if (tty) std::printf("\n");
      break;
    }
    std::string line(raw);
    std::free(raw);
    auto words = admin::split_words(line);
    if (!words) {
      std::fprintf(stderr, "error: %s\n", words.error().c_str());
      continue;
    }
    if (words->empty()) continue;
    add_history(line.c_str());
    if ((*words)[0] == "quit" || (*words)[0] == "exit") break;
    last = sh.run(*words);
    std::fflush(stderr);
  }
  if (!hist.empty()) write_history(hist.c_str());
  return last == kNoConnect || last == kBroken ? last : kOk;
}

}  // namespace

int main(int argc, char** argv) {
  Shell sh;
  std::string config_file;
  int watch = 0;
  std::vector<std::string> words;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> std::optional<std::string> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "zumactl: %s needs a value\n%s", flag, kUsageText);
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    if (a == "--json") {
      sh.json = true;
    } else if (a == "--socket" || a == "-s") {
      auto v = value("--socket");
      if (!v) return kUsage;
      sh.socket = *v;
    } else if (a == "--config" || a == "-c") {
      auto v = value("--config");
      if (!v) return kUsage;
      config_file = *v;
    } else if (a == "--watch") {
      auto v = value("--watch");
      if (!v) return kUsage;
      watch = std::atoi(v->c_str());
      if (watch <= 0) {
        std::fprintf(stderr, "zumactl: --watch needs a number of seconds > 0\n");
        return kUsage;
      }
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsageText, stdout);
      return kOk;
    } else if (a.starts_with("-") && a.size() > 1 && words.empty()) {
      std::fprintf(stderr, "zumactl: unknown flag '%s'\n%s", a.c_str(), kUsageText);
      return kUsage;
    } else {
      break;
    }
  }
  for (; i < argc; ++i) words.push_back(argv[i]);
  if (sh.socket.empty() && !config_file.empty()) {
    try {
      sh.socket = config::load(config_file).node.control_socket;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zumactl: %s\n", e.what());
      return kUsage;
    }
  }
  if (sh.socket.empty()) {
    const char* env = std::getenv("ZUMA_CONTROL_SOCKET");
    sh.socket = env && *env ? env : kDefaultSocket;
  }
  if (words.empty()) return repl(sh);
  if (watch == 0) return sh.run(words);
  for (;;) {
    if (!sh.json) std::printf("\033[H\033[2J");
    const int rc = sh.run(words);
    if (rc != kOk) return rc;
    std::this_thread::sleep_for(std::chrono::seconds(watch));
  }
}
