"""3D models: checking a GLB (gltf), converting it to OBJ/PLY/STL (convert), the cache of
converted files (conversions), and rendering a preview image (render).

May import: files, store, pool, errors.
"""
