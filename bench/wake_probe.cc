// What does one UDP send cost the sender when it wakes the receiver? A forked receiver
// takes 20,000 datagrams of 500 bytes (a 503's size) from a loopback socket, blocking in
// recv (it sleeps between datagrams) or spinning with MSG_DONTWAIT (it never sleeps), on
// CPU 1 or on the sender's CPU 0. The sender, pinned to CPU 0, sends one datagram every
// GAP microseconds (busy-waiting between them, so that the receiver is asleep again)
// and prints the thread CPU time spent inside sendto() per datagram: on loopback that
// includes delivering the datagram and waking the receiver. With BATCH > 1 it sends
// BATCH datagrams with one sendmmsg() every GAP microseconds instead. Results:
// bench/RESULTS.md, "Overload: what a send costs when it wakes the peer" and "Overload:
// 503s sent in batches".
//
//   wake_probe RECEIVER_CPU SPIN GAP_US [BATCH]     e.g. 1 0 100, 1 1 100, 0 0 100, 1 0 5
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace {

double Micros(clockid_t clock) {
  timespec t{};
  clock_gettime(clock, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

bool Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}

constexpr long kDatagrams = 20000;

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s RECEIVER_CPU SPIN(0|1) GAP_US [BATCH]\n", argv[0]);
    return 2;
  }
  const int receiver_cpu = std::atoi(argv[1]);
  const bool spin = std::atoi(argv[2]) != 0;
  const double gap_us = std::atof(argv[3]);
  const int batch = argc == 5 ? std::atoi(argv[4]) : 1;
  if (batch < 1 || batch > 64 || kDatagrams % batch != 0) {
    std::fprintf(stderr, "BATCH: 1-64, dividing %ld\n", kDatagrams);
    return 2;
  }
  const int rx = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof to;
  if (rx < 0 || bind(rx, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
      getsockname(rx, reinterpret_cast<sockaddr*>(&to), &length) != 0) {
    std::perror("bind");
    return 1;
  }
  const pid_t receiver = fork();
  if (receiver == 0) {
    if (!Pin(receiver_cpu)) _exit(1);
    char buffer[2048];
    for (long n = 0; n < kDatagrams;) {
      if (recv(rx, buffer, sizeof buffer, spin ? MSG_DONTWAIT : 0) > 0) ++n;
    }
    _exit(0);
  }
  if (receiver < 0 || !Pin(0)) {
    std::perror("fork/pin");
    return 1;
  }
  const int tx = socket(AF_INET, SOCK_DGRAM, 0);
  char message[500];
  std::memset(message, 'x', sizeof message);
  iovec iov{message, sizeof message};
  mmsghdr batched[64]{};
  for (mmsghdr& m : batched) {
    m.msg_hdr.msg_name = &to;
    m.msg_hdr.msg_namelen = sizeof to;
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
  }
  double in_send = 0;
  for (long i = 0; i < kDatagrams; i += batch) {
    const double start = Micros(CLOCK_MONOTONIC);
    const double cpu = Micros(CLOCK_THREAD_CPUTIME_ID);
    const bool sent = batch == 1
                          ? sendto(tx, message, sizeof message, 0, reinterpret_cast<sockaddr*>(&to),
                                   sizeof to) == static_cast<ssize_t>(sizeof message)
                          : sendmmsg(tx, batched, static_cast<unsigned>(batch), 0) == batch;
    if (!sent) {
      std::perror("send");
      return 1;
    }
    in_send += Micros(CLOCK_THREAD_CPUTIME_ID) - cpu;
    while (Micros(CLOCK_MONOTONIC) - start < gap_us) {
    }
  }
  int status = 0;
  waitpid(receiver, &status, 0);
  std::printf(
      "receiver on CPU %d, %s, %d datagram(s) every %.0f us: sender CPU in the send %.2f us per "
      "datagram\n",
      receiver_cpu, spin ? "spinning" : "blocking", batch, gap_us, in_send / kDatagrams);
  return 0;
}
