// What kvfold may replace or delete: only folders it can show it wrote. A name alone is no proof
// (a user's `llama.tmp.2024` looks like a staging folder, and anything can be called
// kvfold.json), so a folder counts as kvfold's when
//   - an output folder: its kvfold.json parses as kvfold's own format and every other entry is
//     a regular file of a name kvfold writes there (weights, config, tokenizer companions,
//     tables, a report), and
//   - a staging or scratch folder: it carries the marker file kvfold wrote into it when it made
//     it (fixed content naming the process), and holds nothing kvfold would not write there.
#pragma once

#include <string>

namespace kvfold {

enum class MarkerKind { kStaging, kScratch };

// The marker's file name in a folder of `kind`.
const char* MarkerName(MarkerKind kind);

// Writes the marker of `kind` for this process into `folder` (throws Error naming it).
void WriteMarker(const std::string& folder, MarkerKind kind);
// Removes it again (a no-op when absent).
void RemoveMarker(const std::string& folder, MarkerKind kind);

// Why `folder` is not a complete output folder kvfold wrote, or "" when it is.
std::string NotKvfoldOutput(const std::string& folder);

// The pid recorded in `folder`'s marker of `kind`, or 0 when `folder` is not a folder kvfold
// made that way (no marker, another content, a link, or entries kvfold never writes there).
long MarkedOwner(const std::string& folder, MarkerKind kind);

// Whether process `pid` no longer exists.
bool ProcessIsGone(long pid);

}  // namespace kvfold
