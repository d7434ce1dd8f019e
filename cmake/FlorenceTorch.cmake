# Finds LibTorch for a project that compiles no CUDA code of its own.
#
# LibTorch normally comes from the PyTorch wheel in the project's venv, so the C++ server and the Python
# export tool share one Torch version (TorchScript artefacts are only guaranteed to load in the version that
# wrote them). Point CMake at it on the command line:
#
#   cmake -S . -B build -G Ninja \
#     -DCMAKE_PREFIX_PATH="$(.venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')"
#
# A libtorch zip from pytorch.org works the same way (CMAKE_PREFIX_PATH=<libtorch>).
#
# Why the two stub targets below. A CUDA build of Torch (the default Linux wheel) has a Caffe2Config.cmake that
# insists on finding a full CUDA toolkit -- FindCUDA, nvcc, enable_language(CUDA) and a compile-and-run of a
# <cuda.h> probe -- and fails with "Your installed Caffe2 version uses CUDA but I cannot find the CUDA
# libraries" where there is none (CPU build machines, and GPU machines that have a driver but no toolkit).
# All that search produces is the imported target torch::cudart, which torch_cuda lists in its link interface.
# We never compile CUDA, and libtorch.so already records libtorch_cuda.so (and that libcudart etc., found through
# the wheel's RPATH into site-packages/nvidia/*) as DT_NEEDED, so CUDA works at run time without linking
# cudart ourselves. Defining torch::cudart first hits the "poor man's include guard" at the top of
# Caffe2/public/cuda.cmake and skips the toolkit search. Likewise caffe2::mkl: MKL is linked statically into
# libtorch_cpu.so, and the wheel's mkl.cmake would otherwise add bogus link directories (/lib/intel64, ...)
# built from an empty MKL_ROOT to every consumer's RUNPATH.
#
# Set FLORENCE_TORCH_CUDA_TOOLKIT=ON to let Torch run its own CUDA toolkit search instead (only needed if CUDA
# sources are ever added to this project).
#
# Also expected and harmless: "library kineto not found" (kineto is built into libtorch_cpu.so in wheels).
#
# Order matters for the server build: Caffe2Config defines protobuf::libprotobuf as an alias of an empty
# target named "dummy" when no protobuf target exists yet, so Protobuf/gRPC must be found BEFORE this file
# is included.

option(FLORENCE_TORCH_CUDA_TOOLKIT
       "Let Torch's CMake config search for a CUDA toolkit (nvcc) instead of stubbing torch::cudart" OFF)

if(NOT FLORENCE_TORCH_CUDA_TOOLKIT AND NOT TARGET torch::cudart)
  add_library(torch::cudart INTERFACE IMPORTED)
endif()
if(NOT TARGET caffe2::mkl)
  add_library(caffe2::mkl INTERFACE IMPORTED)
endif()

if(NOT CMAKE_PREFIX_PATH AND NOT Torch_DIR AND NOT DEFINED ENV{CMAKE_PREFIX_PATH})
  message(STATUS "Looking for LibTorch without CMAKE_PREFIX_PATH; if this fails, configure with "
                 "-DCMAKE_PREFIX_PATH=\"$(.venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')\"")
endif()
find_package(Torch REQUIRED)
message(STATUS "Torch ${Torch_VERSION}: ${TORCH_INSTALL_PREFIX}")

# florence_torch: what targets link instead of `torch`.
#
# The PyTorch wheel's libtorch.so exports its own, statically linked copy of libstdc++'s std::filesystem
# (pytorch/pytorch#133437: std::filesystem::remove_all, copy, status, ...). Any binary that lists
# libtorch.so before libstdc++.so.6 in DT_NEEDED -- the default link order -- binds its std::filesystem calls
# to those copies, and some of them crash (remove_all jumps to address 0 with torch 2.11.0+cu130). Linking
# libstdc++ first, before any library, puts it ahead of libtorch.so in the symbol lookup order. (Assumes
# libstdc++; a clang + libc++ build would need this revisited.)
add_library(florence_torch INTERFACE)
target_link_libraries(florence_torch INTERFACE torch)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT APPLE)
  target_link_options(florence_torch INTERFACE
    "LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
  # AOTInductor packages (engine/aoti_model.cc) are shared libraries that list libtorch.so in DT_NEEDED and
  # carry no RUNPATH: dlopen finds it only if the process has already loaded it. --as-needed drops it from our
  # binaries (they call nothing in it), so keep it, after libstdc++ (see above).
  if(EXISTS "${TORCH_INSTALL_PREFIX}/lib/libtorch.so")
    target_link_options(florence_torch INTERFACE
      "LINKER:--push-state,--no-as-needed,${TORCH_INSTALL_PREFIX}/lib/libtorch.so,--pop-state")  # one item:
    # CMake de-duplicates repeated link options, which would drop a second --push-state/--pop-state pair
  endif()
endif()
