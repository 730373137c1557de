// Force-included into test_attention.c for test_attention_amx_emu: the same
// checks (reference bound, bitwise row independence) with the AMX-BF16
// attention (attention_amx.c) on the emulated tiles (amx_emulate.h) -- its
// cases run wherever the CPU has AVX-512 VNNI (the code's vector part), not
// only on AMX machines.  The dispatch the test calls is redirected: bf16 rows
// go to kernel_attention_rows_amx_emu, the rest to the library as before.
#ifndef AS_ATTENTION_AMX_EMU_H
#define AS_ATTENTION_AMX_EMU_H

#include "amx_emulate.h"
#include "tensor/attention_impl.h"

static inline bool amx_emu_attention_amx_usable(int d) {
    return d % 32 == 0 && kernel_isa_available(KERNEL_ISA_AVX512) && kernel_gemm_bf16_amx_emu();
}

static inline void amx_emu_attention_rows(const kernel_attn_args *a) {
    if (a->bf16) kernel_attention_rows_amx_emu(a);
    else kernel_attention_rows(a);
}

#define kernel_attention_amx_usable amx_emu_attention_amx_usable
#define kernel_attention_rows amx_emu_attention_rows

#endif
