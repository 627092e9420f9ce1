// FaceCloak on-device mask application for iOS: Core ML (ML Program) + Vision landmarks.
// Reference snippet, NOT built or run in this repository (no Apple toolchain on Linux); the same
// logic is exercised in Python by facecloak.clients.ondevice_reference and tests/test_ondevice_*.py.
// Model: facecloak_addclip_112.mlpackage from `facecloak-export ondevice` (inputs roi, mask, matrix, budget).
// Spec of the mask file: docs/mask-format.md. Never log or upload the mask: it is the user's secret.

import CoreML
import Foundation
import Vision
import zlib  // crc32 (libz ships with iOS)
import Compression

enum CloakError: Error { case badMask(String), badLandmarks(String) }

struct DeviceMask {
    let side: Int
    let values: MLMultiArray      // (S, S, 3) float32, delta on the 0..255 scale
    let points: [SIMD2<Double>]   // template landmarks in mask pixels
    let budget: MLMultiArray      // (3,) float32: eps * 255, floor, contrast; (255, 1, 1) = no budget (v1/v2)
}

private func le<T: FixedWidthInteger>(_ d: Data, _ at: Int, _: T.Type) -> T {
    d.subdata(in: d.startIndex + at..<d.startIndex + at + MemoryLayout<T>.size).withUnsafeBytes { T(littleEndian: $0.loadUnaligned(as: T.self)) }
}

/// Parse and verify a .fcmask (docs/mask-format.md, "Reading, in order").
func loadMask(_ d: Data, expectedSide: Int = 112) throws -> DeviceMask {
    guard d.count >= 29, d.prefix(4) == Data("FCMK".utf8) else { throw CloakError.badMask("not a FaceCloak mask") }
    let version = le(d, 4, UInt16.self)
    guard (1...3).contains(version) else { throw CloakError.badMask("mask format version \(version) is not supported") }
    let header = Int(le(d, 6, UInt16.self)), side = Int(le(d, 8, UInt16.self)), n = Int(d[d.startIndex + 28])
    // Version 3 appends the 13-byte perceptual block (rule, eps, floor, contrast) after the model set.
    let extra = version == 3 ? 13 : 0
    guard header == 29 + n + extra, d[d.startIndex + 10] == 3, (8...1024).contains(side) else { throw CloakError.badMask("header corrupted") }
    guard d[d.startIndex + 11] == 1 else { throw CloakError.badMask("unknown template") }
    guard side == expectedSide else { throw CloakError.badMask("mask is \(side) px, the op expects \(expectedSide) px") }
    let scale = Double(Float(bitPattern: le(d, 12, UInt32.self))), quantum = Float(bitPattern: le(d, 16, UInt32.self))
    // Version 1 kept its loose quantum bound; version 2 allows 0.5..4 grey levels.
    let grey = quantum * 255, quantumOk = version == 1 ? quantum > 0 && quantum <= 1 : (0.4999...4.0001).contains(grey)
    guard scale.isFinite, (0.25...4).contains(scale), quantum.isFinite, quantumOk else { throw CloakError.badMask("header corrupted") }
    let size = Int(le(d, 20, UInt32.self)), crc = le(d, 24, UInt32.self)
    guard d.count - header == size else { throw CloakError.badMask("mask is truncated or padded") }
    let payload = d.subdata(in: d.startIndex + header..<d.startIndex + header + size)
    // Version 2 checksums every byte but the CRC field itself; version 1 only the payload.
    let actual: UInt32 = d.withUnsafeBytes { all in
        let p = all.bindMemory(to: UInt8.self).baseAddress!
        if version == 1 { return UInt32(crc32(0, p + header, uInt(size))) }
        return UInt32(crc32(crc32(0, p, 24), p + 28, uInt(d.count - 28)))
    }
    guard actual == crc else { throw CloakError.badMask("mask is corrupted (checksum mismatch)") }
    // The op's budget input: (eps * 255, floor, contrast); a mask without a budget allows 255 everywhere.
    var budget: [Float] = [255, 1, 1]
    if version == 3 {
        let at = 29 + n
        guard d[d.startIndex + at] == 1 else { throw CloakError.badMask("mask uses unknown perceptual budget rule \(d[d.startIndex + at])") }
        let eps = Float(bitPattern: le(d, at + 1, UInt32.self)), flat = Float(bitPattern: le(d, at + 5, UInt32.self))
        let contrast = Float(bitPattern: le(d, at + 9, UInt32.self))
        guard eps.isFinite, flat.isFinite, contrast.isFinite else { throw CloakError.badMask("mask perceptual budget is not finite") }
        guard eps > 0, eps * 255 <= 64 + 1e-3, (0...1).contains(flat), contrast > 0, contrast <= 1 else {
            throw CloakError.badMask("mask perceptual budget is out of range") }
        budget = [eps * 255, flat, contrast]  // flat: the "floor" share of eps on flat pixels
    }
    let n3 = side * side * 3
    guard version == 1 || size <= n3 + (n3 >> 12) + (n3 >> 14) + (n3 >> 25) + 13 else { throw CloakError.badMask("payload too large") }
    // Compression's ZLIB is raw DEFLATE: drop the 2-byte zlib header and the 4-byte Adler-32 trailer.
    let deflate = payload.subdata(in: payload.startIndex + 2..<payload.endIndex - 4)
    var raw = [Int8](repeating: 0, count: n3 + 1)  // one spare byte: a payload inflating to more is refused
    let got = raw.withUnsafeMutableBytes { dst in deflate.withUnsafeBytes { src in
        compression_decode_buffer(dst.bindMemory(to: UInt8.self).baseAddress!, dst.count,
                                  src.bindMemory(to: UInt8.self).baseAddress!, src.count, nil, COMPRESSION_ZLIB) } }
    guard got == n3 else { throw CloakError.badMask("mask payload cannot be decoded") }
    let peak = raw[..<n3].map { abs(Int($0)) }.max() ?? 0
    guard version == 1 || (peak <= 127 && Float(peak) * grey <= 64 + grey / 2 + 1e-3) else { throw CloakError.badMask("mask amplitude exceeds the largest budget") }
    let values = try MLMultiArray(shape: [NSNumber(value: side), NSNumber(value: side), 3], dataType: .float32)
    let ptr = values.dataPointer.bindMemory(to: Float.self, capacity: n3)
    for i in 0..<n3 { ptr[i] = Float(raw[i]) * grey }
    let t112: [SIMD2<Double>] = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    let points = t112.map { (($0 - 56) / scale + 56) * Double(side) / 112 }
    let budgetArray = try MLMultiArray(shape: [3], dataType: .float32)
    for i in 0..<3 { budgetArray[i] = NSNumber(value: budget[i]) }
    return DeviceMask(side: side, values: values, points: points, budget: budgetArray)
}

/// Parse a mask file that may hold a set (version 4, docs/mask-format.md "Version 4"); a single mask is a set of one.
func loadMaskSet(_ d: Data, expectedSide: Int = 112) throws -> [DeviceMask] {
    guard d.count >= 6, d.prefix(4) == Data("FCMK".utf8), le(d, 4, UInt16.self) == 4 else { return [try loadMask(d, expectedSide: expectedSide)] }
    guard d.count >= 12 else { throw CloakError.badMask("mask set is truncated") }
    let count = Int(le(d, 6, UInt16.self)), crc = le(d, 8, UInt32.self)
    guard (2...16).contains(count) else { throw CloakError.badMask("mask set claims \(count) members") }
    let actual: UInt32 = d.withUnsafeBytes { all in
        let p = all.bindMemory(to: UInt8.self).baseAddress!
        return UInt32(crc32(crc32(0, p, 8), p + 12, uInt(d.count - 12)))
    }
    guard actual == crc else { throw CloakError.badMask("mask set is corrupted (checksum mismatch)") }
    var members: [DeviceMask] = [], at = 12
    for _ in 0..<count {
        guard at + 4 <= d.count else { throw CloakError.badMask("mask set is truncated") }
        let length = Int(le(d, at, UInt32.self)); at += 4
        guard length <= d.count - at else { throw CloakError.badMask("mask set is truncated") }
        members.append(try loadMask(d.subdata(in: d.startIndex + at..<d.startIndex + at + length), expectedSide: expectedSide))
        at += length
    }
    guard at == d.count else { throw CloakError.badMask("mask set has bytes after its last member") }
    return members
}

/// One member per photo, uniformly at random: cloaked photos then do not all carry the same pattern.
func pickMember(_ set: [DeviceMask]) -> DeviceMask { set[Int.random(in: 0..<set.count)] }

/// Least-squares similarity src -> dst (closed form, equals Umeyama in 2-D). Returns [a, -b, tx; b, a, ty].
func fitSimilarity(_ src: [SIMD2<Double>], _ dst: [SIMD2<Double>]) throws -> [Double] {
    guard src.count == 5, src.allSatisfy({ $0.x.isFinite && $0.y.isFinite }) else { throw CloakError.badLandmarks("need 5 finite landmarks") }
    let ms = src.reduce(.zero, +) / 5, md = dst.reduce(.zero, +) / 5
    var norm = 0.0, a = 0.0, b = 0.0
    for (s0, d0) in zip(src, dst) { let s = s0 - ms, d = d0 - md; norm += s.x * s.x + s.y * s.y; a += s.x * d.x + s.y * d.y; b += s.x * d.y - s.y * d.x }
    guard norm > 1 else { throw CloakError.badLandmarks("landmarks are degenerate") }
    a /= norm; b /= norm
    return [a, -b, md.x - (a * ms.x - b * ms.y), b, a, md.y - (b * ms.x + a * ms.y)]
}

/// Vision gives normalised landmarks (origin bottom-left); return the 5 template points in pixels,
/// image-left first: eye centres (pupils), nose tip (lowest nose-crest point), mouth corners.
/// Sorting by x assumes an upright-ish face (roll well under 90 degrees), as selfies are.
func fivePoints(_ face: VNFaceObservation, width: Int, height: Int) -> [SIMD2<Double>]? {
    guard let l = face.landmarks, let le = l.leftPupil, let re = l.rightPupil, let nose = l.noseCrest, let lips = l.outerLips else { return nil }
    func px(_ r: VNFaceLandmarkRegion2D) -> [SIMD2<Double>] {
        r.pointsInImage(imageSize: CGSize(width: width, height: height)).map { [Double($0.x), Double(height) - Double($0.y)] }
    }
    let eyes = (px(le) + px(re)).sorted { $0.x < $1.x }
    let lipPts = px(lips), noseTip = px(nose).max { $0.y < $1.y }!
    let left = lipPts.min { $0.x < $1.x }!, right = lipPts.max { $0.x < $1.x }!
    return [eyes[0], eyes[1], noseTip, left, right]
}

/// Cloak one face in an RGBA8 frame buffer in place (only the face ROI is touched).
final class FaceCloakOp {
    private let model: MLModel
    init(url: URL) throws {
        let cfg = MLModelConfiguration(); cfg.computeUnits = .cpuAndGPU  // fp32 model; ANE would run fp16
        model = try MLModel(contentsOf: url, configuration: cfg)
    }

    func apply(rgba: UnsafeMutablePointer<UInt8>, width: Int, height: Int, rowBytes: Int,
               mask: DeviceMask, landmarks: [SIMD2<Double>]) throws -> Bool {
        let m = try fitSimilarity(landmarks, mask.points)          // frame pixel -> mask pixel
        // ROI = bounding box of the mask square mapped back into the frame (inverse similarity).
        let det = m[0] * m[4] - m[1] * m[3]
        let inv = [m[4] / det, -m[1] / det, -m[3] / det, m[0] / det]
        let s = Double(mask.side)
        let corners = [(0.0, 0.0), (s, 0), (0, s), (s, s)].map { (x, y) -> (Double, Double) in
            let dx = x - m[2], dy = y - m[5]; return (inv[0] * dx + inv[1] * dy, inv[2] * dx + inv[3] * dy) }
        let x0 = max(Int(floor(corners.map(\.0).min()!)), 0), y0 = max(Int(floor(corners.map(\.1).min()!)), 0)
        let x1 = min(Int(ceil(corners.map(\.0).max()!)) + 1, width), y1 = min(Int(ceil(corners.map(\.1).max()!)) + 1, height)
        guard x0 < x1, y0 < y1 else { return false }             // face wholly outside: nothing to do
        let w = x1 - x0, h = y1 - y0
        let roi = try MLMultiArray(shape: [1, NSNumber(value: h), NSNumber(value: w), 3], dataType: .float32)
        let r = roi.dataPointer.bindMemory(to: Float.self, capacity: h * w * 3)
        for y in 0..<h { for x in 0..<w { for c in 0..<3 { r[(y * w + x) * 3 + c] = Float(rgba[(y0 + y) * rowBytes + (x0 + x) * 4 + c]) } } }
        // Fold the ROI offset into the matrix: ROI pixel (x, y) -> mask pixel.
        let mat = try MLMultiArray(shape: [2, 3], dataType: .float32)
        let shifted = [m[0], m[1], m[2] + m[0] * Double(x0) + m[1] * Double(y0), m[3], m[4], m[5] + m[3] * Double(x0) + m[4] * Double(y0)]
        for i in 0..<6 { mat[i] = NSNumber(value: shifted[i]) }
        // The model computes the budget from the ROI in the mask's frame, clips the mask, then adds it.
        let input = try MLDictionaryFeatureProvider(dictionary: ["roi": roi, "mask": mask.values, "matrix": mat, "budget": mask.budget])
        let out = try model.prediction(from: input).featureValue(for: "cloaked")!.multiArrayValue!
        let o = out.dataPointer.bindMemory(to: Float.self, capacity: h * w * 3)  // already rounded and clipped
        for y in 0..<h { for x in 0..<w { for c in 0..<3 { rgba[(y0 + y) * rowBytes + (x0 + x) * 4 + c] = UInt8(o[(y * w + x) * 3 + c]) } } }
        return true
    }
}
