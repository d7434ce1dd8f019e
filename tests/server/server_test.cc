// florence.v1.Florence end to end over real gRPC on loopback: scheduler,
// metrics and server in this process (port 0), a real exported model (the
// location-prone tiny model, whose outputs hold boxes, quads and polygons) and
// real image files. The reference for token ids is engine::Runtime::Run (the
// single-request path, equal to transformers' generate()).
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "batching/scheduler.h"
#include "engine/image/decode.h"
#include "engine/pipeline/runtime.h"
#include "florence/v1/florence.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/metrics.h"
#include "server/metrics_text.h"
#include "server/server.h"

namespace florence::server {
namespace {

using ::testing::HasSubstr;
namespace hv1 = ::grpc::health::v1;

std::string ReadImage(const std::string& name) {
  std::ifstream in(absl::StrCat(FLORENCE_TEST_IMAGES_DIR, "/", name), std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A running server: metrics + scheduler + gRPC on loopback port 0.
struct Stack {
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<batching::Scheduler> scheduler;
  std::unique_ptr<Server> server;
  std::unique_ptr<v1::Florence::Stub> stub;
  std::unique_ptr<hv1::Health::Stub> health;

  static std::unique_ptr<Stack> Start(batching::Scheduler::Options options = {},
                                      ServerOptions server_options = {}, bool attach = true) {
    auto s = std::make_unique<Stack>();
    auto m = Metrics::Create("127.0.0.1:0");
    EXPECT_TRUE(m.ok()) << m.status();
    s->metrics = *std::move(m);
    server_options.address = "127.0.0.1:0";
    server_options.max_message_bytes = 8 << 20;
    auto srv = Server::Start(server_options, s->metrics.get());
    EXPECT_TRUE(srv.ok()) << srv.status();
    s->server = *std::move(srv);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    args.SetMaxReceiveMessageSize(64 << 20);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", s->server->port()),
                                             grpc::InsecureChannelCredentials(), args);
    s->stub = v1::Florence::NewStub(channel);
    s->health = hv1::Health::NewStub(channel);
    if (attach) s->Attach(options);
    return s;
  }

  void Attach(batching::Scheduler::Options options) {
    if (options.kv_cache_bytes == (int64_t{4} << 30)) options.kv_cache_bytes = int64_t{1} << 30;
    auto sched = batching::Scheduler::Create(FLORENCE_TEST_LOC_MODEL_DIR, options, metrics.get());
    ASSERT_TRUE(sched.ok()) << sched.status();
    scheduler = *std::move(sched);
    server->Attach(scheduler.get());
    server->SetServing(true);
  }

  ~Stack() {
    if (server) server->Shutdown(absl::Now() + absl::Seconds(5));
    scheduler.reset();
  }

  MetricsText Scrape() {
    auto text = ScrapeMetrics(metrics->port());
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *std::move(text) : MetricsText();
  }

  hv1::HealthCheckResponse::ServingStatus Health(const std::string& service = "") {
    grpc::ClientContext ctx;
    hv1::HealthCheckRequest req;
    req.set_service(service);
    hv1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    return st.ok() ? resp.status() : hv1::HealthCheckResponse::UNKNOWN;
  }
};

v1::Image Encoded(const std::string& file) {
  v1::Image image;
  image.set_encoded(ReadImage(file));
  return image;
}

v1::Options Opts(int beams, int max_new) {
  v1::Options o;
  o.set_num_beams(beams);
  o.set_max_new_tokens(max_new);
  return o;
}

std::vector<int64_t> Ids(const v1::TaskResult& r) { return {r.token_ids().begin(), r.token_ids().end()}; }

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    batching::Scheduler::Options options;
    options.policy.max_batch = 4;
    options.policy.max_delay = absl::Milliseconds(5);
    stack_ = Stack::Start(options).release();
    auto rt = engine::Runtime::Create(FLORENCE_TEST_LOC_MODEL_DIR, {});
    ASSERT_TRUE(rt.ok()) << rt.status();
    runtime_ = rt->release();
  }
  static void TearDownTestSuite() {
    delete stack_;
    delete runtime_;
  }

  static std::vector<int64_t> Alone(const std::string& file, engine::Task task, int beams,
                                    int max_new, const std::string& text = "",
                                    std::optional<engine::RegionBox> region = std::nullopt) {
    const std::string bytes = ReadImage(file);
    engine::RunRequest r;
    r.image = bytes;
    r.task = task;
    r.text = text;
    r.region = region;
    r.num_beams = beams;
    r.max_new_tokens = max_new;
    auto out = runtime_->Run(r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->token_ids : std::vector<int64_t>{};
  }

  static Stack* stack_;
  static engine::Runtime* runtime_;
};

Stack* ServerTest::stack_ = nullptr;
engine::Runtime* ServerTest::runtime_ = nullptr;

TEST_F(ServerTest, EveryTypedRpcAnswersWithTheTokensOfTheRequestAlone) {
  auto& stub = *stack_->stub;
  {
    grpc::ClientContext ctx;
    v1::CaptionRequest req;
    *req.mutable_image() = Encoded("astronaut.jpg");
    req.set_detail(v1::CAPTION_DETAIL_DETAILED);
    *req.mutable_options() = Opts(3, 24);
    v1::CaptionResponse resp;
    ASSERT_TRUE(stub.Caption(&ctx, req, &resp).ok());
    EXPECT_EQ(Ids(resp.result()), Alone("astronaut.jpg", engine::Task::kDetailedCaption, 3, 24));
    EXPECT_EQ(resp.text(), resp.result().text());
    EXPECT_EQ(resp.result().task(), v1::TASK_DETAILED_CAPTION);
    EXPECT_EQ(resp.result().image_width(), 512u);
    EXPECT_EQ(resp.result().usage().num_beams(), 3u);
    EXPECT_EQ(resp.result().usage().generated_tokens() + 1, resp.result().token_ids_size());
    EXPECT_GT(resp.result().usage().total_ms(), 0);
  }
  {
    grpc::ClientContext ctx;
    v1::DetectRequest req;
    *req.mutable_image() = Encoded("coffee.png");
    *req.mutable_options() = Opts(1, 64);
    v1::DetectResponse resp;
    ASSERT_TRUE(stub.Detect(&ctx, req, &resp).ok());
    EXPECT_EQ(Ids(resp.result()), Alone("coffee.png", engine::Task::kObjectDetection, 1, 64));
    EXPECT_EQ(resp.detections_size(), resp.result().detections_size());
    for (const auto& d : resp.detections()) {
      EXPECT_GT(d.confidence(), 0);
      EXPECT_LE(d.confidence(), 1);
    }
  }
  {
    grpc::ClientContext ctx;
    v1::DetectRequest req;
    *req.mutable_image() = Encoded("chelsea.webp");
    req.set_mode(v1::DETECT_MODE_GROUNDING);
    req.set_text("a cat on a table");
    *req.mutable_options() = Opts(3, 32);
    v1::DetectResponse resp;
    ASSERT_TRUE(stub.Detect(&ctx, req, &resp).ok());
    EXPECT_EQ(Ids(resp.result()),
              Alone("chelsea.webp", engine::Task::kPhraseGrounding, 3, 32, "a cat on a table"));
  }
  {
    grpc::ClientContext ctx;
    v1::OcrRequest req;
    *req.mutable_image() = Encoded("page.tiff");
    req.set_with_regions(true);
    *req.mutable_options() = Opts(1, 64);
    v1::OcrResponse resp;
    ASSERT_TRUE(stub.Ocr(&ctx, req, &resp).ok());
    EXPECT_EQ(Ids(resp.result()), Alone("page.tiff", engine::Task::kOcrWithRegion, 1, 64));
    EXPECT_EQ(resp.regions_size(), resp.result().ocr_regions_size());
    for (const auto& r : resp.regions()) EXPECT_EQ(r.quad_size(), 4);
  }
  {
    grpc::ClientContext ctx;
    v1::SegmentRequest req;
    *req.mutable_image() = Encoded("rocket.bmp");
    req.mutable_region()->set_x1(50);
    req.mutable_region()->set_y1(60);
    req.mutable_region()->set_x2(500);
    req.mutable_region()->set_y2(300);
    req.set_return_mask(true);
    *req.mutable_options() = Opts(1, 64);
    v1::SegmentResponse resp;
    grpc::Status st = stub.Segment(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(Ids(resp.result()), Alone("rocket.bmp", engine::Task::kRegionToSegmentation, 1, 64,
                                        "", engine::RegionBox{50, 60, 500, 300}));
    // The mask is a PNG of the original size.
    auto mask = engine::DecodeImage(resp.mask_png());
    ASSERT_TRUE(mask.ok()) << mask.status();
    EXPECT_EQ(mask->width, 640);
    EXPECT_EQ(mask->height, 427);
  }
  {
    grpc::ClientContext ctx;
    v1::DescribeRegionRequest req;
    *req.mutable_image() = Encoded("astronaut.jpg");
    req.mutable_region()->set_x1(100);
    req.mutable_region()->set_y1(100);
    req.mutable_region()->set_x2(300);
    req.mutable_region()->set_y2(400);
    req.set_query(v1::REGION_QUERY_DESCRIPTION);
    *req.mutable_options() = Opts(3, 24);
    v1::DescribeRegionResponse resp;
    ASSERT_TRUE(stub.DescribeRegion(&ctx, req, &resp).ok());
    EXPECT_EQ(Ids(resp.result()), Alone("astronaut.jpg", engine::Task::kRegionToDescription, 3, 24,
                                        "", engine::RegionBox{100, 100, 300, 400}));
  }
  {
    grpc::ClientContext ctx;
    v1::MultiTaskRequest req;
    *req.mutable_image() = Encoded("coffee.png");
    req.add_tasks()->set_task(v1::TASK_CAPTION);
    req.add_tasks()->set_task(v1::TASK_OCR);
    auto* ov = req.add_tasks();
    ov->set_task(v1::TASK_OPEN_VOCABULARY_DETECTION);
    ov->set_text("cup");
    *req.mutable_options() = Opts(1, 32);
    v1::MultiTaskResponse resp;
    ASSERT_TRUE(stub.RunMulti(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.results_size(), 3);
    EXPECT_EQ(Ids(resp.results(0)), Alone("coffee.png", engine::Task::kCaption, 1, 32));
    EXPECT_EQ(Ids(resp.results(1)), Alone("coffee.png", engine::Task::kOcr, 1, 32));
    EXPECT_EQ(Ids(resp.results(2)),
              Alone("coffee.png", engine::Task::kOpenVocabularyDetection, 1, 32, "cup"));
  }
}

TEST_F(ServerTest, RunStreamsCompleteItemsInOrderThenTheUnaryResult) {
  auto& stub = *stack_->stub;
  int items = 0;
  for (int beams : {1, 3}) {
    for (v1::Task task : {v1::TASK_OBJECT_DETECTION, v1::TASK_OCR_WITH_REGION,
                          v1::TASK_REFERRING_EXPRESSION_SEGMENTATION, v1::TASK_CAPTION}) {
      v1::TaskRequest req;
      req.set_task(task);
      *req.mutable_image() = Encoded("astronaut.jpg");
      if (task == v1::TASK_REFERRING_EXPRESSION_SEGMENTATION) req.set_text("the astronaut");
      *req.mutable_options() = Opts(beams, 80);
      grpc::ClientContext ctx;
      auto reader = stub.Run(&ctx, req);
      std::vector<v1::RunEvent> events;
      v1::RunEvent e;
      while (reader->Read(&e)) events.push_back(e);
      ASSERT_TRUE(reader->Finish().ok());
      ASSERT_FALSE(events.empty());
      ASSERT_TRUE(events.back().has_result()) << "the final result comes last";
      const v1::TaskResult& final_result = events.back().result();
      std::string text;
      int detections = 0, regions = 0, instances = 0;
      for (size_t i = 0; i + 1 < events.size(); ++i) {
        const v1::RunEvent& ev = events[i];
        ASSERT_FALSE(ev.has_result()) << "one final result only";
        if (ev.event_case() == v1::RunEvent::kTextDelta) text += ev.text_delta();
        if (ev.has_detection()) {
          ASSERT_LT(detections, final_result.detections_size());
          EXPECT_EQ(ev.index(), static_cast<uint32_t>(detections));
          EXPECT_EQ(ev.detection().SerializeAsString(),
                    final_result.detections(detections).SerializeAsString());
          ++detections;
        }
        if (ev.has_ocr_region()) {
          ASSERT_LT(regions, final_result.ocr_regions_size());
          EXPECT_EQ(ev.ocr_region().SerializeAsString(),
                    final_result.ocr_regions(regions).SerializeAsString());
          ++regions;
        }
        if (ev.has_instance()) {
          ASSERT_LT(instances, final_result.instances_size());
          EXPECT_EQ(ev.instance().SerializeAsString(),
                    final_result.instances(instances).SerializeAsString());
          ++instances;
        }
      }
      EXPECT_EQ(detections, final_result.detections_size());
      EXPECT_EQ(regions, final_result.ocr_regions_size());
      EXPECT_EQ(instances, final_result.instances_size());
      if (task == v1::TASK_CAPTION) {
        EXPECT_EQ(text, final_result.text());
      }
      items += detections + regions + instances;
      // The unary answer to the same request is the stream's final result.
      grpc::ClientContext uctx;
      v1::MultiTaskRequest unary;
      *unary.mutable_image() = req.image();
      unary.add_tasks()->set_task(task);
      unary.mutable_tasks(0)->set_text(req.text());
      *unary.mutable_options() = req.options();
      v1::MultiTaskResponse uresp;
      ASSERT_TRUE(stub.RunMulti(&uctx, unary, &uresp).ok());
      EXPECT_EQ(Ids(uresp.results(0)), Ids(final_result));
      EXPECT_EQ(uresp.results(0).detections_size(), final_result.detections_size());
    }
  }
  EXPECT_GT(items, 3) << "the location-prone model should produce streamed items";
}

TEST_F(ServerTest, ThirtyTwoConcurrentClientsGetTheTokensOfEachRequestAlone) {
  struct Call {
    std::string image;
    v1::Task task;
    std::string text;
    int beams;
    int max_new;
  };
  const std::vector<std::string> images = {"astronaut.jpg", "coffee.png", "chelsea.webp",
                                           "rocket.bmp", "page.tiff"};
  const std::vector<v1::Task> tasks = {v1::TASK_CAPTION, v1::TASK_OBJECT_DETECTION,
                                       v1::TASK_OCR_WITH_REGION, v1::TASK_DENSE_REGION_CAPTION,
                                       v1::TASK_OPEN_VOCABULARY_DETECTION, v1::TASK_OCR,
                                       v1::TASK_REGION_PROPOSAL, v1::TASK_MORE_DETAILED_CAPTION};
  std::vector<Call> calls;
  for (int i = 0; i < 32; ++i) {
    Call c{images[i % images.size()], tasks[i % tasks.size()], "", (i % 3 == 0) ? 3 : 1,
           16 + 8 * (i % 5)};
    if (c.task == v1::TASK_OPEN_VOCABULARY_DETECTION) c.text = "a red object";
    calls.push_back(c);
  }
  std::vector<std::vector<int64_t>> got(calls.size());
  std::vector<grpc::Status> status(calls.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < calls.size(); ++i) {
    clients.emplace_back([&, i] {
      v1::TaskRequest req;
      req.set_task(calls[i].task);
      *req.mutable_image() = Encoded(calls[i].image);
      req.set_text(calls[i].text);
      *req.mutable_options() = Opts(calls[i].beams, calls[i].max_new);
      grpc::ClientContext ctx;
      auto reader = stack_->stub->Run(&ctx, req);
      v1::RunEvent e;
      while (reader->Read(&e)) {
        if (e.has_result()) got[i] = Ids(e.result());
      }
      status[i] = reader->Finish();
    });
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i].error_message();
    EXPECT_EQ(got[i], Alone(calls[i].image, static_cast<engine::Task>(calls[i].task - 1),
                            calls[i].beams, calls[i].max_new, calls[i].text))
        << "call " << i;
  }
  // Encoder batches really held several requests.
  MetricsText m = stack_->Scrape();
  auto batches = m.Histogram("florence_encoder_batch_size");
  ASSERT_TRUE(batches.has_value());
  EXPECT_LT(*batches->Bucket(1), batches->count) << "some encoder batch held more than one request";
}

TEST_F(ServerTest, RunStreamAnswersManyRequestsOverOneStream) {
  grpc::ClientContext ctx;
  auto stream = stack_->stub->RunStream(&ctx);
  const std::vector<std::string> images = {"astronaut.jpg", "coffee.png", "page.tiff"};
  for (int i = 0; i < 6; ++i) {
    v1::StreamRequest r;
    r.set_id(absl::StrCat("req-", i));
    r.mutable_request()->set_task(i % 2 ? v1::TASK_OBJECT_DETECTION : v1::TASK_CAPTION);
    *r.mutable_request()->mutable_image() = Encoded(images[i % 3]);
    *r.mutable_request()->mutable_options() = Opts(1, 20);
    ASSERT_TRUE(stream->Write(r));
  }
  v1::StreamRequest bad;
  bad.set_id("bad");
  bad.mutable_request()->set_task(v1::TASK_CAPTION);
  bad.mutable_request()->mutable_image()->set_encoded("not an image");
  ASSERT_TRUE(stream->Write(bad));
  stream->WritesDone();
  std::map<std::string, v1::StreamResponse> responses;
  v1::StreamResponse resp;
  while (stream->Read(&resp)) responses[resp.id()] = resp;
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(responses.size(), 7u);
  for (int i = 0; i < 6; ++i) {
    const auto& r = responses[absl::StrCat("req-", i)];
    EXPECT_EQ(r.code(), 0);
    EXPECT_EQ(Ids(r.result()), Alone(images[i % 3], i % 2 ? engine::Task::kObjectDetection
                                                           : engine::Task::kCaption, 1, 20));
  }
  EXPECT_EQ(responses["bad"].code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(responses["bad"].message(), HasSubstr("image"));
}

// A client that half-closes right after its only request still gets that request's response before the stream
// ends OK. The request carries a large raw image so that converting it takes a while: the client's half-close
// then reaches the server while the request is still being submitted.
TEST_F(ServerTest, RunStreamAnswersARequestFollowedAtOnceByTheHalfClose) {
  constexpr int kW = 1200, kH = 1000;
  std::string rgb(size_t{kW} * kH * 3, '\0');
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<char>((i * 7) % 251);
  for (int round = 0; round < 8; ++round) {
    grpc::ClientContext ctx;
    auto stream = stack_->stub->RunStream(&ctx);
    v1::StreamRequest r;
    r.set_id(absl::StrCat("only-", round));
    r.mutable_request()->set_task(v1::TASK_CAPTION);
    r.mutable_request()->mutable_image()->mutable_raw()->set_width(kW);
    r.mutable_request()->mutable_image()->mutable_raw()->set_height(kH);
    r.mutable_request()->mutable_image()->mutable_raw()->set_rgb(rgb);
    *r.mutable_request()->mutable_options() = Opts(1, 2);
    ASSERT_TRUE(stream->Write(r, grpc::WriteOptions().set_last_message()));
    std::vector<v1::StreamResponse> responses;
    v1::StreamResponse resp;
    while (stream->Read(&resp)) responses.push_back(resp);
    ASSERT_TRUE(stream->Finish().ok()) << "round " << round;
    ASSERT_EQ(responses.size(), 1u) << "round " << round;
    EXPECT_EQ(responses[0].id(), absl::StrCat("only-", round));
    EXPECT_EQ(responses[0].code(), 0) << responses[0].message();
    EXPECT_EQ(responses[0].result().image_width(), static_cast<uint32_t>(kW));
  }
}

// More requests on one stream than it keeps in flight (it stops reading at its window and reads on as
// responses go out): every one answered, once, in the tokens of the request alone.
TEST_F(ServerTest, RunStreamReadsPastItsWindow) {
  grpc::ClientContext ctx;
  auto stream = stack_->stub->RunStream(&ctx);
  constexpr int kRequests = 40;
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      v1::StreamRequest r;
      r.set_id(absl::StrCat("req-", i));
      r.mutable_request()->set_task(v1::TASK_CAPTION);
      *r.mutable_request()->mutable_image() = Encoded(i % 2 ? "coffee.png" : "astronaut.jpg");
      *r.mutable_request()->mutable_options() = Opts(1, 3);
      if (!stream->Write(r)) return;
    }
    stream->WritesDone();
  });
  std::map<std::string, int> seen;
  v1::StreamResponse resp;
  std::vector<v1::StreamResponse> responses;
  while (stream->Read(&resp)) {
    ++seen[resp.id()];
    responses.push_back(resp);
  }
  writer.join();
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(seen.size(), static_cast<size_t>(kRequests));
  const std::vector<int64_t> astronaut = Alone("astronaut.jpg", engine::Task::kCaption, 1, 3);
  const std::vector<int64_t> coffee = Alone("coffee.png", engine::Task::kCaption, 1, 3);
  for (const auto& r : responses) {
    EXPECT_EQ(seen[r.id()], 1) << r.id();
    ASSERT_EQ(r.code(), 0) << r.id() << ": " << r.message();
    const int i = std::stoi(r.id().substr(4));
    EXPECT_EQ(Ids(r.result()), i % 2 ? coffee : astronaut) << r.id();
  }
}

// A BMP file header + BITMAPINFOHEADER claiming `w` x `h` 24-bit pixels,
// followed by a few bytes of pixel data (the limit check reads the header
// only).
std::string BmpHeader(int32_t w, int32_t h) {
  std::string s = "BM";
  auto le32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  auto le16 = [&](uint16_t v) {
    s.push_back(static_cast<char>(v & 0xff));
    s.push_back(static_cast<char>(v >> 8));
  };
  le32(54 + 64);  // file size
  le32(0);
  le32(54);  // pixel data offset
  le32(40);  // BITMAPINFOHEADER
  le32(static_cast<uint32_t>(w));
  le32(static_cast<uint32_t>(h));
  le16(1);
  le16(24);
  le32(0);  // BI_RGB
  le32(0);
  le32(2835);
  le32(2835);
  le32(0);
  le32(0);
  s += std::string(64, '\0');
  return s;
}

TEST_F(ServerTest, BadInputsAreInvalidArgumentAndTheServerCarriesOn) {
  auto& stub = *stack_->stub;
  const std::string jpeg = ReadImage("astronaut.jpg");
  struct Bad {
    std::string name;
    v1::TaskRequest request;
    std::string message;
    grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  };
  auto caption = [&](std::string bytes) {
    v1::TaskRequest r;
    r.set_task(v1::TASK_CAPTION);
    r.mutable_image()->set_encoded(std::move(bytes));
    *r.mutable_options() = Opts(1, 4);
    return r;
  };
  std::vector<Bad> bad;
  bad.push_back({"truncated JPEG", caption(jpeg.substr(0, jpeg.size() / 2)), "image: "});
  bad.push_back({"random bytes", caption(std::string(3000, '\x13')), "image: "});
  bad.push_back({"0x0 image", caption(BmpHeader(0, 0)), "image: "});
  bad.push_back({"30000x30000 header", caption(BmpHeader(30000, 30000)), "pixels"});
  bad.push_back({"no image", [&] { auto r = caption(""); r.clear_image(); return r; }(), "image: missing"});
  {
    v1::TaskRequest r = caption("");
    r.mutable_image()->mutable_raw()->set_width(10);
    r.mutable_image()->mutable_raw()->set_height(10);
    r.mutable_image()->mutable_raw()->set_rgb(std::string(299, '\0'));
    bad.push_back({"raw RGB of wrong length", r, "needs exactly 300 bytes"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.set_task(v1::TASK_REGION_TO_CATEGORY);
    r.mutable_region()->set_x1(10);
    r.mutable_region()->set_y1(10);
    r.mutable_region()->set_x2(600);
    r.mutable_region()->set_y2(100);
    bad.push_back({"region outside the image", r, "outside the image"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.set_text("not for captions");
    bad.push_back({"text on a task that takes none", r, "<CAPTION>"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.set_task(v1::TASK_PHRASE_GROUNDING);
    bad.push_back({"missing text", r, "<CAPTION_TO_PHRASE_GROUNDING>"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.mutable_options()->set_num_beams(0);
    bad.push_back({"num_beams 0", r, "num_beams"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.mutable_options()->set_num_beams(4000000000u);
    bad.push_back({"num_beams huge", r, "num_beams"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.mutable_options()->set_max_new_tokens(5000);
    bad.push_back({"max_new_tokens over the model's limit", r, "max_new_tokens"});
  }
  {
    v1::TaskRequest r = caption(jpeg);
    r.set_task(static_cast<v1::Task>(99));
    bad.push_back({"unknown task", r, "task"});
  }
  {
    v1::TaskRequest r = caption(std::string(9 << 20, 'x'));
    bad.push_back({"message over the gRPC limit", r, "", grpc::StatusCode::RESOURCE_EXHAUSTED});
  }
  for (const Bad& b : bad) {
    grpc::ClientContext ctx;
    v1::MultiTaskResponse unused;
    auto reader = stub.Run(&ctx, b.request);
    v1::RunEvent e;
    while (reader->Read(&e)) ADD_FAILURE() << b.name << ": unexpected event";
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), b.code) << b.name << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(b.message)) << b.name;
  }
  // Still serving, with the same answers.
  grpc::ClientContext ctx;
  v1::CaptionRequest req;
  *req.mutable_image() = Encoded("coffee.png");
  *req.mutable_options() = Opts(1, 12);
  v1::CaptionResponse resp;
  ASSERT_TRUE(stub.Caption(&ctx, req, &resp).ok());
  EXPECT_EQ(Ids(resp.result()), Alone("coffee.png", engine::Task::kCaption, 1, 12));
}

TEST_F(ServerTest, DeadlinesAndCancellationFreeTheCache) {
  auto& stub = *stack_->stub;
  // Mid-decode deadline.
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(800));
    v1::CaptionRequest req;
    *req.mutable_image() = Encoded("astronaut.jpg");
    *req.mutable_options() = Opts(3, 1000);
    req.mutable_options()->set_min_new_tokens(1000);
    v1::CaptionResponse resp;
    EXPECT_EQ(stub.Caption(&ctx, req, &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // Client cancel mid-stream, after the first streamed item.
  {
    grpc::ClientContext ctx;
    v1::TaskRequest req;
    req.set_task(v1::TASK_CAPTION);
    *req.mutable_image() = Encoded("coffee.png");
    *req.mutable_options() = Opts(1, 1000);
    req.mutable_options()->set_min_new_tokens(1000);
    auto reader = stub.Run(&ctx, req);
    v1::RunEvent e;
    ASSERT_TRUE(reader->Read(&e));
    EXPECT_EQ(e.event_case(), v1::RunEvent::kTextDelta);
    EXPECT_GT(stack_->scheduler->kv_bytes_in_use(), 0);
    ctx.TryCancel();
    while (reader->Read(&e)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // Both requests' rows return to the pool within a decode step or so.
  for (int i = 0; i < 500 && stack_->scheduler->in_flight() > 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(stack_->scheduler->in_flight(), 0);
  MetricsText m = stack_->Scrape();
  EXPECT_EQ(m.Value("florence_kv_cache_used_bytes"), 0.0);
  EXPECT_EQ(m.Value("florence_active_sequences"), 0.0);
  // The expired call is recorded as DEADLINE_EXCEEDED or, when gRPC cancels the
  // expired call before the scheduler's own check, CANCELLED.
  EXPECT_GE(m.Sum("florence_requests_total", {{"code", "DEADLINE_EXCEEDED"}}) +
                m.Sum("florence_requests_total", {{"code", "CANCELLED"}}),
            2);
}

TEST_F(ServerTest, MetricsCountTheRequestsSent) {
  MetricsText before = stack_->Scrape();
  const double ok_before = before.Sum("florence_requests_total",
                                      {{"method", "Ocr"}, {"task", "ocr"}, {"code", "OK"}});
  const auto hist_before =
      before.Histogram("florence_request_duration_seconds", {{"method", "Ocr"}, {"task", "ocr"}});
  const double count_before = hist_before ? hist_before->count : 0;
  constexpr int kCalls = 3;
  for (int i = 0; i < kCalls; ++i) {
    grpc::ClientContext ctx;
    v1::OcrRequest req;
    *req.mutable_image() = Encoded("page.tiff");
    *req.mutable_options() = Opts(1, 8);
    v1::OcrResponse resp;
    ASSERT_TRUE(stack_->stub->Ocr(&ctx, req, &resp).ok());
  }
  MetricsText after = stack_->Scrape();
  EXPECT_EQ(after.Sum("florence_requests_total", {{"method", "Ocr"}, {"task", "ocr"}, {"code", "OK"}}),
            ok_before + kCalls);
  auto hist = after.Histogram("florence_request_duration_seconds", {{"method", "Ocr"}, {"task", "ocr"}});
  ASSERT_TRUE(hist.has_value());
  EXPECT_EQ(hist->count, count_before + kCalls);
  EXPECT_GT(hist->sum, 0);
  EXPECT_GT(after.Sum("florence_generated_tokens_total", {{"task", "ocr"}}), 0);
  auto steps = after.Histogram("florence_decode_step_rows");
  ASSERT_TRUE(steps.has_value());
  EXPECT_GT(steps->count, 0);
}

TEST(ServerLifecycle, HealthFollowsLoadingServingAndDraining) {
  auto stack = Stack::Start({}, {}, /*attach=*/false);
  EXPECT_EQ(stack->Health(), hv1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(stack->Health("florence.v1.Florence"), hv1::HealthCheckResponse::NOT_SERVING);
  {  // Calls before the model is attached: UNAVAILABLE, not a crash.
    grpc::ClientContext ctx;
    v1::CaptionRequest req;
    *req.mutable_image() = Encoded("coffee.png");
    v1::CaptionResponse resp;
    EXPECT_EQ(stack->stub->Caption(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  stack->Attach({});
  ASSERT_TRUE(stack->scheduler->Warmup().ok());
  EXPECT_EQ(stack->Health(), hv1::HealthCheckResponse::SERVING);
  stack->server->SetServing(false);
  EXPECT_EQ(stack->Health(), hv1::HealthCheckResponse::NOT_SERVING);
}

TEST(ServerLifecycle, FullQueueIsResourceExhaustedWithARetryHint) {
  batching::Scheduler::Options options;
  options.max_rows = 1;
  options.max_queue = 1;
  auto stack = Stack::Start(options);
  // One long request holds the only cache row, one waits in the queue.
  auto long_call = [&](grpc::Status* out) {
    grpc::ClientContext ctx;
    v1::CaptionRequest req;
    *req.mutable_image() = Encoded("astronaut.jpg");
    *req.mutable_options() = Opts(1, 150);
    req.mutable_options()->set_min_new_tokens(150);
    v1::CaptionResponse resp;
    *out = stack->stub->Caption(&ctx, req, &resp);
  };
  grpc::Status first, second;
  std::thread a(long_call, &first);
  for (int i = 0; i < 2000 && stack->scheduler->kv_bytes_in_use() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  std::thread b(long_call, &second);
  for (int i = 0; i < 2000 && stack->scheduler->in_flight() < 2; ++i) absl::SleepFor(absl::Milliseconds(5));
  grpc::ClientContext ctx;
  v1::CaptionRequest req;
  *req.mutable_image() = Encoded("coffee.png");
  *req.mutable_options() = Opts(1, 4);
  v1::CaptionResponse resp;
  grpc::Status refused = stack->stub->Caption(&ctx, req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("queue is full"));
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto hint = trailers.find("retry-after-ms");
  ASSERT_NE(hint, trailers.end());
  EXPECT_GT(std::stoi(std::string(hint->second.data(), hint->second.size())), 0);
  a.join();
  b.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_TRUE(second.ok()) << second.error_message();
}

TEST(ServerLifecycle, BearerTokenIsRequiredWhenConfigured) {
  ServerOptions so;
  so.auth_token = "s3cret-token";
  auto stack = Stack::Start({}, so);
  auto call = [&](const char* authorization) {
    grpc::ClientContext ctx;
    if (authorization != nullptr) ctx.AddMetadata("authorization", authorization);
    v1::CaptionRequest req;
    *req.mutable_image() = Encoded("coffee.png");
    *req.mutable_options() = Opts(1, 4);
    v1::CaptionResponse resp;
    return stack->stub->Caption(&ctx, req, &resp).error_code();
  };
  EXPECT_EQ(call(nullptr), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("Bearer wrong"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("s3cret-token"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("Bearer s3cret-token"), grpc::StatusCode::OK);
  EXPECT_EQ(stack->Health(), hv1::HealthCheckResponse::SERVING);  // probes need no token
}


TEST(ServerLifecycle, ImagesOverTheByteLimitAreInvalidArgument) {
  batching::Scheduler::Options options;
  options.decode_limits.max_bytes = 1 << 20;
  auto stack = Stack::Start(options);
  grpc::ClientContext ctx;
  v1::CaptionRequest req;
  std::string big = ReadImage("rocket.bmp");  // 820 KB
  big += big;                                 // 1.6 MB: over the 1 MiB image limit, under gRPC's
  req.mutable_image()->set_encoded(big);
  *req.mutable_options() = Opts(1, 4);
  v1::CaptionResponse resp;
  grpc::Status st = stack->stub->Caption(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("image: "));
  EXPECT_THAT(st.error_message(), HasSubstr("1048576"));
}

}  // namespace
}  // namespace florence::server
