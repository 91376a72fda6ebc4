// The Catch2 main, compiled once for every test executable.
//
// KVFOLD_TEST_EXCLUDE_TAG=once (scripts/test.sh's second pass, under the other OpenBLAS kernel
// family) leaves out the cases tagged [once]: each says why the other kernel family would check
// nothing new there (a result compared with itself computed again by the same kernels).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

namespace {

// "[a]~[b],[c]" -> "[a]~[b]~[tag],[c]~[tag]": the exclusion joins every alternative.
std::string Excluding(std::string spec, const std::string& tag) {
  const std::string exclusion = "~[" + tag + "]";
  for (std::size_t at = spec.find(','); at != std::string::npos; at = spec.find(',', at + 1)) {
    spec.insert(at, exclusion);
    at += exclusion.size();
  }
  return spec + exclusion;
}

}  // namespace

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const char* tag = std::getenv("KVFOLD_TEST_EXCLUDE_TAG");
  if (tag != nullptr && *tag != '\0') {
    auto& specs = session.configData().testsOrTags;
    if (specs.empty()) specs.push_back("~[.]");
    for (auto& spec : specs) spec = Excluding(spec, tag);
    session.useConfigData(session.configData());  // rebuilds the test spec
  }
  return session.run();
}
