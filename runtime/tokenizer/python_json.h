// Internal to runtime/tokenizer: JSON text exactly as Python's json.dumps(ensure_ascii=False) writes it.
// The official DSV4 renderer and output parser both serialise with it, so the chat template and the parsed
// tool-call arguments must reproduce its escaping byte for byte.
#pragma once

#include <string>
#include <string_view>

namespace dsv4::python_json {

/// Appends `s` as a quoted JSON string: \" \\ \n \r \t \b \f escaped, other control bytes as \u00XX,
/// everything else (UTF-8 included) verbatim.
inline void append_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += kHex[(c >> 4) & 0xF];
          out += kHex[c & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace dsv4::python_json
