// XML-RPC <-> MI: the parser and writer of mi_xmlrpc (spec 5.3-5.5).
//
// One methodCall document in, one methodResponse document out, in two halves so that
// the server (server.h) can hold the connection while the dispatcher works:
//   body --guard--> Parse() --> mi::Request --Dispatcher::Start--> Exchange
//   Exchange --ResponseWriter (as the reply is pulled)--> <params> document, or
//   AppendFault() for every outcome that is not a 2xx reply.
//
// Parsing: a document of the common shape (methodCall, methodName, params of string,
// untyped, int/i4 and boolean values; nothing else) is read by FastCallParser (expat,
// SAX, no value tree; fast_call_parser.h). Everything else, including every malformed
// document and every call of the library's own system.* methods (introspection,
// system.multicall), takes xmlrpc-c's path, so faults and those answers are the
// library's own; a differential test (tests/xmlrpc/fast_call_parser_test.cc) holds the
// fast path to xmlrpc-c's results. We never parse XML by hand.
//
// We write a successful methodResponse ourselves: it is a fixed envelope around escaped
// strings, byte for byte what xmlrpc-c writes, and it can be written as the reply is
// pulled (a streamed command's parts go out as they come). Faults are serialised by
// xmlrpc-c.
//
// Request mapping (5.3): methodName is the MI command; each <param> is one nameless
// argument: string as is, int/i4 in decimal, boolean 0/1, double as printf("%lf"),
// base64 as the raw bytes; any other type is fault -501 "Unsupported value of type <n>
// supplied". Commands flagged kNoInput ignore their params (not even type-checked).
//
// The `\n\n` -> `\r\n` rewrite of string params: an XML parser turns CRLF into LF, so an
// OpenSIPS client that needs a CRLF in an argument (t_uac_dlg headers) writes "\n\n" and
// mi_xmlrpc 1.11 rewrites every such pair into "\r\n". We keep that rewrite for
// compatibility with those clients. Consequence: an argument cannot carry two
// consecutive LFs over XML-RPC (it never could in OpenSIPS either).
//
// Reply (5.4): on a 2xx MI code the node lines (spec 2, no indentation, depth lost) are
// the result; the status line is never sent. Text is made safe for XML 1.0: bytes
// < 0x20 other than TAB/LF/CR become 0x7F (as OpenSIPS), and bytes that are not valid
// UTF-8 (xmlrpc-c refuses to serialise them; OpenSIPS would emit broken XML) each
// become U+FFFD.
//
// Faults (5.5): unknown command -506 "Requested command (X) is not available!";
// handler returned nothing -500 "Command (X) processing failed.\n"; an async command
// whose reply failed or never came -500 "Command (X) processing failed (async).\n";
// non-2xx MI code: faultCode = the MI code, faultString = the full reason (or "Error"
// when empty); anything unexpected -500 "Internal server error while processing
// request". Problems with the XML itself are the library's parse faults (-503), which
// also covers our pre-parse guard: a DTD (<!DOCTYPE>/<!ENTITY>, so no entity-expansion
// bombs) or elements nested deeper than kMaxElementDepth (xmlrpc-c builds and frees its
// element tree recursively; very deep input would exhaust the stack). Value nesting is
// limited to XMLRPC_NESTING_LIMIT (64) and the document size to the configured maximum.
//
// Thread-safety: Parse(), AppendFault() and Process() may be called from many threads
// at once (the xmlrpc-c registry is read-only after construction; the fast parser is
// per thread). A ResponseWriter belongs to one reply. The constructor sets xmlrpc-c's
// process-wide limits (xmlrpc_limit_set).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry/dispatcher.h"

namespace sipd::xmlrpc {

enum class ReplyOption {
  // One <string> with all node lines.
  kString = 0,
  // An <array> with one <string> per node line.
  kArray = 1,
};

// Deepest element nesting accepted in a request (XML-RPC needs about 3 elements per
// value nesting level, and values nest at most 64 deep).
inline constexpr int kMaxElementDepth = 256;

// The value nesting limit handed to xmlrpc-c (XMLRPC_NESTING_LIMIT_ID).
inline constexpr size_t kMaxValueNesting = 64;

// Makes `text` safe to carry in an XML-RPC string (see file comment).
std::string SanitizeForXml(std::string_view text);
// The same, appending to `*out`.
void AppendSanitizedForXml(std::string_view text, std::string* out);

// Appends `text` (already sanitised) as the content of an XML-RPC <string>, escaped as
// xmlrpc-c 1.x does: `<`, `>`, `&` as entities, CR as `&#x0d;`, everything else as is.
void AppendXmlStringContent(std::string_view text, std::string* out);

// The 1.11 string-argument rewrite: every "\n\n" pair, left to right, becomes "\r\n".
std::string RewriteDoubleNewlines(std::string_view text);

// Returns an empty string if `xml` passes the pre-parse guard, else the reason.
std::string CheckXmlShape(std::string_view xml, int max_element_depth);

// Writes a successful reply as a methodResponse document while the dispatcher hands it
// over (mi::ReplyWriter): the envelope head with the status, one element (array mode)
// or one stretch of the string (string mode) per node, the tail at EndReply(). A reply
// whose code is not 2xx writes nothing (the caller writes AppendFault() instead).
// Output goes to the string set by SetOutput(), which may change between parts of a
// pulled reply.
class ResponseWriter final : public mi::ReplyWriter {
 public:
  explicit ResponseWriter(ReplyOption option) : option_(option) {}

  void SetOutput(std::string* out) { out_ = out; }
  // Forgets the previous reply (keeps the scratch buffer).
  void Reset() { failed_ = false; }

  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  void EndReply() override;

 private:
  const ReplyOption option_;
  std::string* out_ = nullptr;
  std::string line_;
  std::string safe_;
  bool failed_ = false;
};

class XmlrpcProcessor {
 public:
  struct Options {
    ReplyOption reply_option = ReplyOption::kString;
    // Initial capacity of the reply text (OpenSIPS `buffer_size`; it grows as needed).
    size_t buffer_size = 8192;
    // Largest document xmlrpc-c will parse (XMLRPC_XML_SIZE_LIMIT_ID).
    size_t max_xml_size = 1024 * 1024;
  };

  // `dispatcher` must outlive this object. It is used only for calls that xmlrpc-c's
  // registry runs itself (system.multicall), synchronously and without async waits.
  XmlrpcProcessor(mi::Dispatcher& dispatcher, Options options);
  ~XmlrpcProcessor();
  XmlrpcProcessor(const XmlrpcProcessor&) = delete;
  XmlrpcProcessor& operator=(const XmlrpcProcessor&) = delete;

  const Options& options() const { return options_; }

  enum class Parsed {
    // `*request` is an MI call to start (its args_error set if a param did not convert).
    kCall,
    // The whole methodResponse is in `*response` (parse fault, system.* method).
    kAnswered,
  };
  // Parses one methodCall document. Never throws. `caller` (may be null) is who sent it:
  // calls that xmlrpc-c runs itself (system.multicall) run MI commands as that caller.
  Parsed Parse(std::string_view call_xml, mi::Request* request, std::string* response,
               const mi::CallContext* caller = nullptr) const;

  // Appends the fault document for a ready exchange that is not a 2xx kReply (or whose
  // pulled stream failed). `args_error` is the request's args_error (for kParseError);
  // `waited_async` says the exchange was not ready when started (spec 5.5 async text).
  void AppendFault(mi::Exchange& exchange, const absl::Status& args_error, bool waited_async,
                   std::string* out) const;
  // True if the ready exchange's answer is a fault (AppendFault), false if it is a
  // successful reply to write with a ResponseWriter.
  static bool IsFault(mi::Exchange& exchange);

  // Runs one methodCall document to its end on the calling thread (blocking, through
  // Dispatcher::Run) and returns the methodResponse document: for tests and in-process
  // callers. Never throws; every problem becomes a fault response.
  std::string Process(std::string_view call_xml) const;
  // The same, appending the document to `*out`.
  void Process(std::string_view call_xml, std::string* out) const;

 private:
  struct Impl;
  const Options options_;
  mi::Dispatcher& dispatcher_;
  std::unique_ptr<Impl> impl_;
};

// xmlrpc-c's reading of a methodCall and the spec 5.3 mapping of its params: true and
// `*request` filled, or false if the document is not a proper call or calls a system.*
// method. The reference FastCallParser is held to; Parse() uses it for what the fast
// parser declines.
bool LibraryParseCall(std::string_view call_xml, mi::Request* request);

// A fault document (serialised by xmlrpc-c), appended to `*out`.
void AppendFaultDocument(int code, const std::string& text, std::string* out);

}  // namespace sipd::xmlrpc
