// Reference behaviour for src/selector/ere.rs: what libstdc++ does with a pattern compiled as
// std::regex(pattern, std::regex::extended) and matched with std::regex_match, the way
// nix-env (Nix 2.8) matches selector names.
//
// Build: g++ -std=c++17 -O2 -o oracle oracle.cc
//
// Input, one case per line: fields separated by single spaces, each field an 'x' followed by
// the bytes in hex (so the empty string is "x"). The first field is the pattern, the others
// are candidate strings.
//
// Output, one line per case:
//   E <what()>   the pattern was rejected with this regex_error message
//   M <bits>     the pattern was accepted; one '0' or '1' per candidate (regex_match result)
//   T <bits>     accepted, but matching did not finish within the time limit (libstdc++'s
//                backtracking is exponential on some patterns); bits for the candidates done
//   X <what()>   any other exception (not expected)
//
// Matching runs in a forked child so that a runaway match can be killed. The time limit per
// pattern is the first argument, in milliseconds (default 1000).

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  throw std::runtime_error("bad hex digit");
}

std::string decode(const std::string& field) {
  if (field.empty() || field[0] != 'x' || field.size() % 2 != 1)
    throw std::runtime_error("bad field: " + field);
  std::string out;
  for (size_t i = 1; i + 1 < field.size(); i += 2)
    out.push_back(static_cast<char>(hex_digit(field[i]) * 16 + hex_digit(field[i + 1])));
  return out;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (true) {
    size_t space = line.find(' ', start);
    fields.push_back(line.substr(start, space - start));
    if (space == std::string::npos) break;
    start = space + 1;
  }
  return fields;
}

// Matches every candidate in a child process; returns "M bits", or "T bits" on timeout.
std::string match_all(const std::regex& re, const std::vector<std::string>& fields,
                      int limit_ms) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  std::cout.flush();
  pid_t child = fork();
  if (child < 0) throw std::runtime_error("fork");
  if (child == 0) {
    close(fds[0]);
    for (size_t i = 1; i < fields.size(); ++i) {
      char bit = std::regex_match(decode(fields[i]), re) ? '1' : '0';
      if (write(fds[1], &bit, 1) != 1) _exit(1);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string bits;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(limit_ms);
  bool timed_out = false;
  while (bits.size() + 1 < fields.size()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) { timed_out = true; break; }
    struct pollfd pfd = {fds[0], POLLIN, 0};
    int ready = poll(&pfd, 1, static_cast<int>(left));
    if (ready == 0) { timed_out = true; break; }
    char buffer[256];
    ssize_t got = read(fds[0], buffer, sizeof buffer);
    if (got <= 0) { timed_out = true; break; }  // child died (e.g. stack overflow)
    bits.append(buffer, static_cast<size_t>(got));
  }
  if (timed_out) kill(child, SIGKILL);
  close(fds[0]);
  waitpid(child, nullptr, 0);
  return (timed_out ? "T " : "M ") + bits;
}

}  // namespace

int main(int argc, char** argv) {
  int limit_ms = argc > 1 ? std::atoi(argv[1]) : 1000;
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> fields = split(line);
    std::string pattern = decode(fields[0]);
    std::string out;
    try {
      std::regex re(pattern, std::regex::extended);
      out = match_all(re, fields, limit_ms);
    } catch (const std::regex_error& error) {
      out = std::string("E ") + error.what();
    } catch (const std::exception& error) {
      out = std::string("X ") + error.what();
    }
    std::cout << out << '\n';
  }
  return 0;
}
