// XML-RPC <-> MI: the parser and writer of mi_xmlrpc (spec 5.3-5.5).
//
// One methodCall document in, one methodResponse document out:
//   body --guard--> xmlrpc-c parse --> mi::Request --mi::Dispatch--> reply lines
//   --> string or array value, or a <fault>.
// xmlrpc-c always parses (we never parse XML by hand). We write a successful
// methodResponse ourselves: it is a fixed envelope around escaped strings, byte for
// byte what xmlrpc-c writes, and building xmlrpc-c values to serialise them cost more
// than the command. Faults are serialised by xmlrpc-c. Calls of the library's own
// system.* methods (introspection, system.multicall) and documents that do not parse
// take the xmlrpc-c registry's whole path (its default method runs MI), so those
// answers are the library's own.
//
// Request mapping (5.3): methodName is the MI command; each <param> is one nameless
// argument: string as is, int/i4 in decimal, boolean 0/1, double as printf("%lf"),
// base64 as the raw bytes; any other type is fault -501 "Unsupported value of type <n>
// supplied". Commands flagged kNoInput ignore their params (not even type-checked).
//
// The `\n\n` -> `\r\n` rewrite of string params: xmlrpc-c (like any XML parser) turns
// CRLF into LF, so an OpenSIPS client that needs a CRLF in an argument (t_uac_dlg
// headers) writes "\n\n" and mi_xmlrpc 1.11 rewrites every such pair into "\r\n". We
// keep that rewrite for compatibility with those clients. Consequence: an argument
// cannot carry two consecutive LFs over XML-RPC (it never could in OpenSIPS either).
//
// Reply (5.4): on a 2xx MI code the node lines (spec 2, no indentation, depth lost) are
// the result; the status line is never sent. Text is made safe for XML 1.0: bytes
// < 0x20 other than TAB/LF/CR become 0x7F (as OpenSIPS), and bytes that are not valid
// UTF-8 (xmlrpc-c refuses to serialise them; OpenSIPS would emit broken XML) each
// become U+FFFD. The reply text is built while the command flushes (a ReplyWriter).
//
// Faults (5.5): unknown command -506 "Requested command (X) is not available!";
// handler returned nothing -500 "Command (X) processing failed.\n"; non-2xx MI code:
// faultCode = the MI code, faultString = the full reason (or "Error" when empty);
// anything unexpected -500 "Internal server error while processing request".
// Problems with the XML itself are the library's parse faults (-503), which also covers
// our pre-parse guard: a DTD (<!DOCTYPE>/<!ENTITY>, so no entity-expansion bombs) or
// elements nested deeper than kMaxElementDepth (xmlrpc-c builds and frees its element
// tree recursively; very deep input would exhaust the stack). Value nesting is limited to
// XMLRPC_NESTING_LIMIT (64) and the document size to the configured maximum.
//
// Thread-safety: Process() may be called from many threads at once (the xmlrpc-c
// registry is read-only after construction; each call has its own writer). The
// constructor sets xmlrpc-c's process-wide limits (xmlrpc_limit_set).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

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

class XmlrpcProcessor {
 public:
  struct Options {
    ReplyOption reply_option = ReplyOption::kString;
    // Initial capacity of the reply text (OpenSIPS `buffer_size`; it grows as needed).
    size_t buffer_size = 8192;
    // Largest document xmlrpc-c will parse (XMLRPC_XML_SIZE_LIMIT_ID).
    size_t max_xml_size = 1024 * 1024;
  };

  // `dispatcher` must outlive this object.
  XmlrpcProcessor(mi::Dispatcher& dispatcher, Options options);
  ~XmlrpcProcessor();
  XmlrpcProcessor(const XmlrpcProcessor&) = delete;
  XmlrpcProcessor& operator=(const XmlrpcProcessor&) = delete;

  // Runs one methodCall document and returns the methodResponse document. Never throws;
  // every problem becomes a fault response.
  std::string Process(std::string_view call_xml) const;
  // The same, appending the document to `*out` (so that a caller can reuse one buffer).
  void Process(std::string_view call_xml, std::string* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sipd::xmlrpc
