// Where the test model and reference fixture are (made by the CTest setup tests
// in tests/CMakeLists.txt).
#ifndef FLORENCE_TESTS_ENGINE_TEST_DATA_H_
#define FLORENCE_TESTS_ENGINE_TEST_DATA_H_

#include <cstdlib>
#include <string>

namespace florence::testdata {

// `env` if set and non-empty, else the compiled-in default for this build tree.
inline std::string EnvOr(const char* env, const char* fallback) {
  const char* value = std::getenv(env);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// Directory written by tools/florence2_export.py --random tiny --seed 0.
inline std::string TestModelDir() {
  return EnvOr("FLORENCE_TEST_MODEL_DIR", FLORENCE_TEST_MODEL_DIR_DEFAULT);
}

// Reference values written by tools/make_smoke_fixture.py for TestModelDir().
inline std::string TestSmokeFixture() {
  return EnvOr("FLORENCE_TEST_SMOKE_FIXTURE",
               FLORENCE_TEST_SMOKE_FIXTURE_DEFAULT);
}

}  // namespace florence::testdata

#endif  // FLORENCE_TESTS_ENGINE_TEST_DATA_H_
