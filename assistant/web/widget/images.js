// Images a visitor adds (file button, paste, drag and drop): decoded by the browser, downscaled to
// fit the server's limits and imageMaxSide (never enlarged), drawn on white (transparency),
// encoded again as JPEG (which also drops EXIF: no location leaves the device) and sent as a data
// URL. Each comes with a small thumbnail for the thread and its SHA-256, the name the stored
// history gives it (so a redrawn thread finds the thumbnail again).

var IMAGES_PER_MESSAGE = 4;
var IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp", "image/gif"];

function imageBudget() {
  // The bytes one image may have: the server's image limit, and its share of one event's size
  // (base64 makes 4 characters of 3 bytes; room is left for the rest of the event).
  var perEvent = Math.floor((LIMITS.maxEventBytes - 65536) * 0.75 / IMAGES_PER_MESSAGE);
  return Math.max(16384, Math.min(LIMITS.maxImageBytes, perEvent));
}

function canvasBlob(bitmap, width, height, quality) {
  var canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  var ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, width, height);
  return new Promise(function (resolve, reject) {
    canvas.toBlob(function (blob) {
      if (blob) resolve(blob); else reject(new WidgetError("invalid_image"));
    }, "image/jpeg", quality);
  });
}

function blobDataUrl(blob) {
  return new Promise(function (resolve, reject) {
    var reader = new FileReader();
    reader.onload = function () { resolve(reader.result); };
    reader.onerror = function () { reject(new WidgetError("invalid_image")); };
    reader.readAsDataURL(blob);
  });
}

async function sha256Hex(blob) {
  if (!window.crypto || !window.crypto.subtle) return null; // not a secure context
  var digest = await window.crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.prototype.map.call(new Uint8Array(digest), function (b) {
    return (b < 16 ? "0" : "") + b.toString(16);
  }).join("");
}

async function prepareImage(file, maxSide) {
  if (IMAGE_TYPES.indexOf(file.type) < 0) throw new WidgetError("unsupported_image_format");
  var bitmap;
  try {
    bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
  } catch (e) {
    throw new WidgetError("invalid_image", String(e));
  }
  try {
    var width = bitmap.width;
    var height = bitmap.height;
    var side = Math.min(maxSide, LIMITS.maxImageSide);
    var scale = Math.min(1, side / Math.max(width, height), Math.sqrt(LIMITS.maxImagePixels / (width * height)));
    var budget = imageBudget();
    var quality = 0.86;
    var blob = null;
    var w = 1;
    var h = 1;
    for (var tries = 0; tries < 8; tries++) {
      w = Math.max(1, Math.round(width * scale));
      h = Math.max(1, Math.round(height * scale));
      blob = await canvasBlob(bitmap, w, h, quality);
      if (blob.size <= budget) break;
      scale *= 0.75;
      quality = Math.max(0.6, quality - 0.08);
    }
    if (blob.size > budget) throw new WidgetError("image_too_large");
    var thumbScale = Math.min(1, 160 / Math.max(width, height));
    var thumb = await canvasBlob(bitmap, Math.max(1, Math.round(width * thumbScale)),
      Math.max(1, Math.round(height * thumbScale)), 0.7);
    return {
      url: await blobDataUrl(blob), sha256: await sha256Hex(blob), thumb: await blobDataUrl(thumb),
      width: w, height: h, bytes: blob.size
    };
  } finally {
    bitmap.close();
  }
}

function imageFiles(list) {
  var files = [];
  for (var i = 0; list && i < list.length; i++) {
    var item = list[i];
    var file = item.kind === "file" ? item.getAsFile() : item;
    if (file && /^image\//.test(file.type)) files.push(file);
  }
  return files;
}
