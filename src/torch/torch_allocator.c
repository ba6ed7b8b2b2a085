/* PyTorch entry points: written with the CUDA backend. */
#include "nofrag.h"
int nf_torch_unused;
