# embed_arrays.cmake -- what embed_templates.cmake and embed_recipes.cmake
# share: each file as a NUL-terminated byte array (no escaping to get wrong,
# one line of the file a line) and a {name, text} table row for it.
#
#   include(embed_arrays.cmake)
#   fla_embed_arrays("${names}" "${paths}" <array prefix> body table)
#
# appends the arrays to the variable named by `body` and the rows to `table`.
function(fla_embed_arrays names paths prefix body_var table_var)
  set(body "${${body_var}}")
  set(table "${${table_var}}")
  set(i 0)
  foreach(path ${paths})
    list(GET names ${i} name)
    file(READ "${path}" hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
    string(REPLACE "0x0a," "0x0a,\n  " hex "${hex}")
    string(APPEND body "/* ${name} */\nstatic const char ${prefix}${i}_[] = {\n  ${hex}0x00};\n\n")
    string(APPEND table "  {\"${name}\", ${prefix}${i}_},\n")
    math(EXPR i "${i} + 1")
  endforeach()
  set(${body_var} "${body}" PARENT_SCOPE)
  set(${table_var} "${table}" PARENT_SCOPE)
endfunction()
