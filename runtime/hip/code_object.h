/*
** code_object.h -- what an AMDGPU code object (the ELF hipRTC returns) says
** of itself: its target and its kernels' resources, read from the ELF
** header and the msgpack metadata note (amdhsa.kernels), without a GPU.
** The counterpart of ptxas' report (runtime/cuda/nvrtc.h).
*/
#ifndef FLA_HIP_CODE_OBJECT_H
#define FLA_HIP_CODE_OBJECT_H

#include <stddef.h>

/* The maximum over the module's kernels; -1 for what the metadata lacks. */
typedef struct fla_hip_resources {
  int vgprs, sgprs;            /* registers per lane / per wavefront */
  int vgpr_spills, sgpr_spills;
  int stack_bytes;             /* .private_segment_fixed_size: scratch per lane */
  int lds_bytes;               /* .group_segment_fixed_size: static LDS */
  int wavefront_size;          /* 64 (CDNA, GCN) or 32 (RDNA) */
} fla_hip_resources;

/* Fills *out; returns the number of kernels described (0: all fields -1). */
int fla_hip_code_resources(const void *code, size_t size, fla_hip_resources *out);

/* The EF_AMDGPU_MACH value of the ELF header (e.g. 0x3f for gfx90a, 0x36
** for gfx1030), or -1 when code is not an AMDGPU ELF. */
int fla_hip_code_mach(const void *code, size_t size);

#endif
