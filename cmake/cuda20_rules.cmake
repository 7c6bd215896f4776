# CMake 3.25 does not know the C++20 flag of nvcc 13; tell it (used as CMAKE_USER_MAKE_RULES_OVERRIDE_CUDA).
set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
