// registrar: REGISTER processing (RFC 3261 section 10.3) on top of usrloc.
//
// For each REGISTER handed over by a SIP worker (Core::AddSipHandler):
//   1. Require: only the `path` extension is supported, else 420 + Unsupported;
//   2. the AOR is taken from the To URI (user[@host], host lower-cased; the domain part
//      only with usrloc use_domain=1); the hosts and ports of To and of every Contact must
//      be valid RFC 3261 hosts and ports (sipd/core/sip_uri.h), else 400;
//   3. Call-ID and CSeq must be present and valid; the Expires header, each Contact's
//      `expires` and `q` parameters must parse;
//   4. `*` must be alone and come with `Expires: 0`: it removes every binding;
//   5. each contact's expiry is its `expires` parameter, else the Expires header, else
//      default_expires; a non-zero value below min_expires rejects the whole request
//      with 423 Interval Too Brief + Min-Expires; values above max_expires are lowered;
//   6. under the AOR's slot lock: a binding with the same Call-ID and a higher CSeq makes
//      the request fail (out of order); the same CSeq is a retransmission and changes
//      nothing (it is answered with the current bindings, like the original); a request
//      that would leave more than max_contacts bindings (and more than before) fails with
//      503, and so does one that would add a contact beyond max_contacts_total in the
//      whole table (503 with Retry-After: retry_after), or beyond usrloc's
//      max_contacts_per_source for the request's source address (503 with Retry-After);
//      otherwise every binding is added,
//      refreshed or (expires 0) removed at once;
//   7. the 200 OK lists every current binding with its remaining expiry (plus Path when
//      the UA supports it, and Date). With usrloc db_mode 1 it is sent only after the
//      SQLite commit of the AOR (500 if that commit fails), but the SIP worker does not
//      wait for it: it defers the reply (SipRequest::Defer: through tm's server
//      transaction when tm is loaded, else stateless to the request's source over the
//      protocol it came on), queues the AOR's record with the reply
//      (Usrloc::CommitLater) and goes back to its socket; whichever process commits the
//      batch sends the replies after the COMMIT. Where a request cannot be deferred the
//      worker commits and waits as before.
// A request that fails at any step changes nothing. Errors carry the OpenSIPS-style
// `P-Registrar-Error` header naming the problem.
//
// Stored with each binding: Call-ID, CSeq, User-Agent, Path (all Path headers, comma
// separated), received (the source address as `sip:IP:PORT` when it differs from the
// Contact's host:port), the receiving socket, the Allow methods bitmask, q and
// +sip.instance.
//
// Thread/process-safety: a Registrar is created in the attendant and used by every SIP
// worker; it is immutable after Init and keeps its per-request state on the stack.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/sip.h"
#include "sipd/modules/usrloc/usrloc.h"

namespace sipd::registrar {

struct Options {
  uint32_t default_expires = 3600;
  // 0 disables the check.
  uint32_t min_expires = 60;
  // 0 = no upper limit.
  uint32_t max_expires = 0;
  // Contacts per AOR; 0 = no limit.
  uint32_t max_contacts = 0;
  // Contacts in the whole location table: past it, a REGISTER that would add one is
  // answered 503 with Retry-After; 0 = no limit.
  uint32_t max_contacts_total = 100000;
  // Seconds in that Retry-After.
  uint32_t retry_after = 60;
  // Store the source address as `received` when it differs from the Contact.
  bool store_received = true;
};

// A reply ready to be sent with SipRequest::Reply().
struct RegisterReply {
  int code = 200;
  std::string reason = "OK";
  std::vector<std::string> headers;
};

class Registrar {
 public:
  struct Counters {
    mi::Counter accepted;  // registrar:accepted_regs
    mi::Counter rejected;  // registrar:rejected_regs
  };

  // REQUIRES: `usrloc` and `table` outlive the registrar.
  Registrar(Options options, usrloc::Usrloc& usrloc, usrloc::LocationTable& table,
            Counters counters = {});

  // Processes one REGISTER (parsing, checks, table update, database commit) and returns
  // the reply to send. Never throws.
  RegisterReply Process(SipRequest& request);
  // Process() + SipRequest::Reply(); in write-through mode the reply is deferred until
  // the commit (header comment, step 7).
  void Handle(SipRequest& request);
  // usrloc's acknowledgment of a deferred REGISTER (Usrloc::SetAckHandler): sends its
  // reply, or 500 when the commit failed. Any process.
  void Acknowledge(std::string_view ack, const absl::Status& committed);

  const Options& options() const { return options_; }

 private:
  // `pending` (may be nullptr: commit and wait as Process() does): in write-through
  // mode, set to the AOR state still to commit before the reply may be sent.
  RegisterReply Process(SipRequest& request, std::optional<usrloc::AorSnapshot>* pending);

  Options options_;
  usrloc::Usrloc& usrloc_;
  usrloc::LocationTable& table_;
  Counters counters_;
};

// The `registrar` module. modparams: default_expires, min_expires, max_expires,
// max_contacts, max_contacts_total, retry_after, store_received. Needs `usrloc` loaded before it;
// saves into table `location`.
class RegistrarModule : public Module {
 public:
  std::string_view name() const override { return "registrar"; }
  absl::Status SetParam(std::string_view param, const ParamValue& value) override;
  absl::Status Init(Core& core) override;

  // REQUIRES: Init() succeeded.
  Registrar& registrar() { return *registrar_; }

 private:
  Options options_;
  std::unique_ptr<Registrar> registrar_;
};

}  // namespace sipd::registrar

namespace sipd {
// The factory of the module list (sipd/module_list.cc).
std::unique_ptr<Module> NewRegistrarModule();
}  // namespace sipd
