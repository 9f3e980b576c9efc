/*
 * make check-asan: preloaded right after the sanitizer runtime into the Lua interpreter
 * that runs the suite. Its constructor runs before main() and removes LD_PRELOAD from the
 * environment, so no child the suite starts (nginx for the emulator, node for the official
 * SDKs, sh, curl) inherits the runtime; only the Lua process is instrumented. Lua children
 * that load the sanitized core go through tools/asan/lua, which preloads it again.
 */
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void)
{
    unsetenv("LD_PRELOAD");
}
