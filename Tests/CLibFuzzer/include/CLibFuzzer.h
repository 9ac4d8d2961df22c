// libFuzzer's driver, for a fuzz target with a main of its own (SwiftPM gives every
// executable one, under its own name): Tests/HTTP1Fuzz calls it when built with
// -sanitize=fuzzer. Declared here because Swift cannot declare a C function.
#ifndef C_LIB_FUZZER_H
#define C_LIB_FUZZER_H

#include <stddef.h>
#include <stdint.h>

/// Runs libFuzzer with these arguments, calling `callback` with each input.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
