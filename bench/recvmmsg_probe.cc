// Does receiving UDP datagrams in batches (recvmmsg) make a datagram cheaper for the
// receiver than one recvmsg each? A forked sender sends 400,000 datagrams of 700 bytes
// (a SIP request's size) to a loopback socket; the receiver takes them one recvmsg at a
// time, or up to BATCH per recvmmsg (MSG_WAITFORONE, as a SIP worker would), and prints
// its own CPU time (user + system) per datagram; the sender prints its own (on loopback
// the sender's system call also delivers the datagram into the receiver's queue). Results:
// bench/RESULTS.md, section "Overload: what a refusal costs inside sipd".
//
//   recvmmsg_probe BATCH          e.g. 1, then 32; `taskset -c 0` for one CPU
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

constexpr long kDatagrams = 400000;
constexpr size_t kBufferSize = 65536;

}  // namespace

int main(int argc, char** argv) {
  const int batch = argc > 1 ? std::atoi(argv[1]) : 1;
  if (batch < 1 || batch > 1024) {
    std::fprintf(stderr, "usage: %s BATCH (1-1024)\n", argv[0]);
    return 2;
  }
  const int rx = socket(AF_INET, SOCK_DGRAM, 0);
  const int buffer = 8 << 20;
  (void)setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof to;
  if (bind(rx, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 ||
      getsockname(rx, reinterpret_cast<sockaddr*>(&to), &length) != 0) {
    std::perror("bind");
    return 1;
  }
  const pid_t sender = fork();
  if (sender == 0) {
    const int tx = socket(AF_INET, SOCK_DGRAM, 0);
    const double sender_start = CpuSeconds();
    char message[700];
    std::memset(message, 'x', sizeof message);
    for (long i = 0; i < kDatagrams; ++i) {
      // On loopback a full receive queue drops the datagram without telling the sender,
      // so the sender pauses every 2,000 to stay below it.
      (void)sendto(tx, message, sizeof message, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      if (i % 2000 == 1999) usleep(1000);
    }
    std::printf("sender: %.2f us of CPU per datagram sent (loopback delivery included)\n",
                (CpuSeconds() - sender_start) / static_cast<double>(kDatagrams) * 1e6);
    std::fflush(stdout);
    _exit(0);
  }
  std::vector<std::vector<char>> buffers(batch, std::vector<char>(kBufferSize));
  std::vector<mmsghdr> messages(batch);
  std::vector<iovec> data(batch);
  std::vector<sockaddr_storage> sources(batch);
  timeval wait{2, 0};  // the end: no datagram for 2 s (some were dropped)
  (void)setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  long received = 0, calls = 0;
  const double start = CpuSeconds();
  while (received < kDatagrams) {
    for (int i = 0; i < batch; ++i) {
      data[i] = {buffers[i].data(), kBufferSize};
      messages[i].msg_hdr = {};
      messages[i].msg_hdr.msg_iov = &data[i];
      messages[i].msg_hdr.msg_iovlen = 1;
      messages[i].msg_hdr.msg_name = &sources[i];
      messages[i].msg_hdr.msg_namelen = sizeof sources[i];
    }
    int n = 0;
    if (batch == 1) {
      n = recvmsg(rx, &messages[0].msg_hdr, 0) >= 0 ? 1 : -1;
    } else {
      n = recvmmsg(rx, messages.data(), static_cast<unsigned>(batch), MSG_WAITFORONE, nullptr);
    }
    if (n < 0) break;
    received += n;
    ++calls;
  }
  const double cpu = CpuSeconds() - start;
  waitpid(sender, nullptr, 0);
  std::printf("batch %d: %ld datagrams, %.2f us of receiver CPU each, %.1f per call\n", batch,
              received, cpu / static_cast<double>(received) * 1e6,
              static_cast<double>(received) / static_cast<double>(calls ? calls : 1));
  return 0;
}
