// model-viewer fetches decoders from Google's CDN by default; our GLBs need none of them, and this
// page makes no request to another host, so each points at a path of this server that is absent.
self.ModelViewerElement = {
  dracoDecoderLocation: "/static/vendor/model-viewer/absent/draco/",
  ktx2TranscoderLocation: "/static/vendor/model-viewer/absent/basis/",
  lottieLoaderLocation: "/static/vendor/model-viewer/absent/lottie.js",
};
