// CPU feature detection (x86-64): CPUID for what the processor implements,
// XGETBV for what the operating system has enabled.  An instruction set is
// usable only when both agree: e.g. AVX-512 needs XCR0 bits 5-7 (opmask and
// the upper ZMM state) or the kernel does not preserve those registers across
// context switches.  AMX additionally needs XCR0 bits 17-18 (tile config and
// data); Linux also wants arch_prctl(ARCH_REQ_XCOMP_PERM) before first use,
// which kernel_amx_permitted (kernels_amx.c) asks for before the "amx" ISA
// is offered: these flags report only what the CPU and XCR0 allow.
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tensor/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t cpu_xgetbv(uint32_t index) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(index));
    return ((uint64_t)edx << 32) | eax;
}

static void cpu_detect(cpu_features *f) {
    memset(f, 0, sizeof *f);
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) f->amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163; // "Auth" "enti" "cAMD"
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    const uint64_t xcr0 = cpu_xgetbv(0);
    const bool os_avx = (xcr0 & 0x6) == 0x6;        // SSE + AVX (YMM) state
    const bool os_avx512 = (xcr0 & 0xE6) == 0xE6;   // + opmask, ZMM_Hi256, Hi16_ZMM
    const bool os_amx = (xcr0 & 0x60000) == 0x60000; // XTILECFG + XTILEDATA
    if (!os_avx) return;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        unsigned bb, cc, dd;
        __cpuid_count(7, 1, a71, bb, cc, dd);
    }
    f->fma = fma;
    f->f16c = f16c;
    f->avx2 = (b7 >> 5) & 1;
    f->avx_vnni = f->avx2 && ((a71 >> 4) & 1);
    if (os_avx512) {
        f->avx512f = (b7 >> 16) & 1;
        f->avx512bw = f->avx512f && ((b7 >> 30) & 1);
        f->avx512vl = f->avx512f && ((b7 >> 31) & 1);
        f->avx512vnni = f->avx512f && ((c7 >> 11) & 1);
        f->avx512bf16 = f->avx512f && ((a71 >> 5) & 1);
    }
    if (os_amx && ((d7 >> 24) & 1)) { // AMX-TILE
        f->amx_bf16 = (d7 >> 22) & 1;
        f->amx_int8 = (d7 >> 25) & 1;
    }
}
#else
static void cpu_detect(cpu_features *f) { memset(f, 0, sizeof *f); }
#endif

static cpu_features cpu_features_detected;
static char cpu_description[256];
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_init(void) {
    cpu_detect(&cpu_features_detected);
    const cpu_features *f = &cpu_features_detected;
    const struct { bool on; const char *name; } flags[] = {
        {f->avx2, "avx2"}, {f->fma, "fma"}, {f->f16c, "f16c"}, {f->avx_vnni, "avx_vnni"},
        {f->avx512f, "avx512f"}, {f->avx512bw, "avx512bw"}, {f->avx512vl, "avx512vl"},
        {f->avx512vnni, "avx512vnni"}, {f->avx512bf16, "avx512bf16"}, {f->amx_bf16, "amx_bf16"},
        {f->amx_int8, "amx_int8"},
    };
    size_t len = 0;
    cpu_description[0] = '\0';
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (!flags[i].on) continue;
        int w = snprintf(cpu_description + len, sizeof cpu_description - len, "%s%s", len ? " " : "", flags[i].name);
        if (w > 0 && (size_t)w < sizeof cpu_description - len) len += (size_t)w;
    }
    if (len == 0) snprintf(cpu_description, sizeof cpu_description, "baseline x86-64 (no AVX2)");
}

const cpu_features *cpu_get_features(void) {
    pthread_once(&cpu_once, cpu_init);
    return &cpu_features_detected;
}

const char *cpu_describe(void) {
    pthread_once(&cpu_once, cpu_init);
    return cpu_description;
}
