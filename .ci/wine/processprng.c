/*
 * bcryptprimitives.dll for Wine prefixes that lack it (Debian's Wine 8.0).
 *
 * Rust's Windows standard library imports ProcessPrng from bcryptprimitives.dll to seed
 * its hash maps and for other randomness; without the DLL every Rust program fails to
 * start. This stand-in exports ProcessPrng and fills the buffer from RtlGenRandom
 * (advapi32!SystemFunction036), which Wine implements. Built and installed into the
 * prefix by .ci/wine-setup; never used on real Windows, which has the real DLL.
 */
#include <windows.h>

/* RtlGenRandom: exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills `data` with `len` random bytes; TRUE on success (Windows' ProcessPrng never fails). */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a 32-bit length: feed it in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
