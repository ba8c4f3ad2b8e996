# Passed to CMake as -DCMAKE_PROJECT_INCLUDE=<this file> by ./deepaf when ROS 2 comes from the
# PyPI `ros-*` wheels. Their exported `<pkg>::<pkg>__rosidl_generator_py` targets name the
# include directories of the interpreter the wheels were built with (/opt/python/...), which
# do not exist here, and CMake refuses to generate. At the end of the top-level directory this
# rewrites those entries to the active interpreter's Python and NumPy include directories.
# On a normal ROS 2 install no target names /opt/python/, so it changes nothing.
get_property(_deepaf_fix_registered GLOBAL PROPERTY DEEPAF_FIX_WHEEL_INCLUDES_REGISTERED)
if(NOT _deepaf_fix_registered)
  set_property(GLOBAL PROPERTY DEEPAF_FIX_WHEEL_INCLUDES_REGISTERED TRUE)

  function(deepaf_fix_wheel_includes)
    get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
    set(_broken "")
    foreach(_target IN LISTS _targets)
      get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      if(_dirs AND "${_dirs}" MATCHES "/opt/python/")
        list(APPEND _broken ${_target})
      endif()
    endforeach()
    if(NOT _broken)
      return()
    endif()
    find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
    foreach(_target IN LISTS _broken)
      get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
      set(_fixed "")
      foreach(_dir IN LISTS _dirs)
        if(_dir MATCHES "^/opt/python/.*numpy")
          list(APPEND _fixed ${Python3_NumPy_INCLUDE_DIRS})
        elseif(_dir MATCHES "^/opt/python/")
          list(APPEND _fixed ${Python3_INCLUDE_DIRS})
        else()
          list(APPEND _fixed "${_dir}")
        endif()
      endforeach()
      list(REMOVE_DUPLICATES _fixed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    endforeach()
    list(LENGTH _broken _count)
    message(STATUS "deepaf: rewrote wheel include paths of ${_count} imported targets")
  endfunction()

  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL deepaf_fix_wheel_includes)
endif()
